#!/bin/sh
# One node of the compose Kafka cluster: a KRaft broker+controller whose broker listener takes
# SASL/SCRAM-SHA-512 only (clients and the other brokers alike); the controller listener takes
# SASL/PLAIN with the brokers' own identity (SCRAM cannot work there: its credentials live in the
# metadata the controllers serve), and stays inside the compose network. The SCRAM credentials of
# the brokers and of each cinestream role (cinestream-admin, -generator, -processor, -reader,
# -auditor: src/cinestream/kafka/acls.py) go into the metadata log when the storage is formatted
# (once: --ignore-formatted), so the cluster authenticates from its first start. StandardAuthorizer
# refuses what no ACL allows; the brokers' user and the admin are super users, the ACLs of the
# other roles are created by the kafka-setup service (`cinestream topics create`, as the admin).
# Same settings as `cinestream up --cluster` on one machine.
set -eu
: "${KAFKA_NODE_ID:?}" "${KAFKA_CLUSTER_ID:?}" "${KAFKA_BROKER_PASSWORD:?}"
: "${KAFKA_ADMIN_PASSWORD:?}" "${KAFKA_GENERATOR_PASSWORD:?}" "${KAFKA_PROCESSOR_PASSWORD:?}"
: "${KAFKA_READER_PASSWORD:?}" "${KAFKA_AUDITOR_PASSWORD:?}"
KAFKA_HOME=${KAFKA_HOME:-/opt/kafka}
DATA=${KAFKA_DATA_DIR:-/var/lib/kafka/data}
HOST=${KAFKA_ADVERTISED_HOST:-kafka-$KAFKA_NODE_ID}
PORT=${KAFKA_PORT:-9092}
CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
VOTERS=${KAFKA_VOTERS:-1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093}
CONF=${KAFKA_CONF_DIR:-/tmp/kafka}
MECHANISM=SCRAM-SHA-512
LOGIN=org.apache.kafka.common.security.scram.ScramLoginModule
PLAIN=org.apache.kafka.common.security.plain.PlainLoginModule
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java

umask 077
mkdir -p "$CONF"
cat > "$CONF/server.properties" <<PROPERTIES
process.roles=broker,controller
node.id=$KAFKA_NODE_ID
controller.quorum.voters=$VOTERS
controller.listener.names=CONTROLLER
listeners=SASL_PLAINTEXT://:$PORT,CONTROLLER://:$CONTROLLER_PORT
advertised.listeners=SASL_PLAINTEXT://$HOST:$PORT
listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
inter.broker.listener.name=SASL_PLAINTEXT
sasl.enabled.mechanisms=$MECHANISM
sasl.mechanism.inter.broker.protocol=$MECHANISM
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=$LOGIN required username="kafka-broker" password="$KAFKA_BROKER_PASSWORD";
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=$PLAIN required username="kafka-broker" password="$KAFKA_BROKER_PASSWORD" user_kafka-broker="$KAFKA_BROKER_PASSWORD";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:kafka-broker;User:cinestream-admin
log.dirs=$DATA
auto.create.topics.enable=false
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
log.message.timestamp.before.max.ms=9223372036854775807
PROPERTIES
# What the healthcheck's kafka-broker-api-versions.sh connects with (the brokers' own user).
cat > "$CONF/client.properties" <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=$MECHANISM
sasl.jaas.config=$LOGIN required username="kafka-broker" password="$KAFKA_BROKER_PASSWORD";
PROPERTIES

# The storage tool's arguments hold the SCRAM passwords: java reads them from a private argument
# file, so they never show in a process listing (the storage script would put them in argv).
# Inside the file's quotes a backslash and a quote are escaped with a backslash.
quoted() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'; }
if [ ! -f "$DATA/meta.properties" ]; then
  ARGS="$CONF/format.args"
  cat > "$ARGS" <<ARGUMENTS
kafka.tools.StorageTool format --ignore-formatted -t "$KAFKA_CLUSTER_ID" -c "$CONF/server.properties"
--add-scram "$MECHANISM=[name=kafka-broker,password=$(quoted "$KAFKA_BROKER_PASSWORD")]"
--add-scram "$MECHANISM=[name=cinestream-admin,password=$(quoted "$KAFKA_ADMIN_PASSWORD")]"
--add-scram "$MECHANISM=[name=cinestream-generator,password=$(quoted "$KAFKA_GENERATOR_PASSWORD")]"
--add-scram "$MECHANISM=[name=cinestream-processor,password=$(quoted "$KAFKA_PROCESSOR_PASSWORD")]"
--add-scram "$MECHANISM=[name=cinestream-reader,password=$(quoted "$KAFKA_READER_PASSWORD")]"
--add-scram "$MECHANISM=[name=cinestream-auditor,password=$(quoted "$KAFKA_AUDITOR_PASSWORD")]"
ARGUMENTS
  "$JAVA" -Xmx256m -cp "$KAFKA_HOME/libs/*" "@$ARGS" || { rm -f "$ARGS"; exit 1; }
  rm -f "$ARGS"
fi
exec "$KAFKA_HOME/bin/kafka-server-start.sh" "$CONF/server.properties"
