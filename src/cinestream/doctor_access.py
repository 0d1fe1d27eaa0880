"""doctor's lines on who may reach what: files in the state dir other users can read, and the
Kafka principals of the cluster profile and compose (each authenticates, each holds its ACLs)."""

from __future__ import annotations

from cinestream.doctor_check import Check
from cinestream.errors import ServiceUnavailable, first_line
from cinestream.kafka import admin
from cinestream.local import modes
from cinestream.local.postgres import server_gid
from cinestream.settings import Settings


def permission_checks(settings: Settings) -> list[Check]:
    """A WARN for each path in the state dir holding a secret, a password or logs that users
    other than its owner may read (the first ``modes.SHOWN``, then how many more); one OK line
    when there is none. Nothing without a state dir."""
    state_dir = settings.state_dir
    if not state_dir.is_dir():
        return []
    loose = modes.loose_paths(state_dir, server_gid(settings))
    if not loose:
        return [Check("OK", "permissions", f"{state_dir}: secrets, passwords and logs owner-only")]
    checks = [
        Check(
            "WARN",
            "permissions",
            f"{item.path} holds {item.holds} and is mode {item.mode:o}: {item.exposure()}",
            f"chmod {item.wanted:o} {item.path}  (`cinestream up` makes every such path private)",
        )
        for item in loose[: modes.SHOWN]
    ]
    if len(loose) > modes.SHOWN:
        checks.append(
            Check(
                "WARN",
                "permissions",
                f"{len(loose) - modes.SHOWN} more paths under {state_dir} other users can read",
                "cinestream up (makes them private)",
            )
        )
    return checks


def principal_checks(settings: Settings) -> list[Check]:
    """Where the principals are cinestream's own (kafka/acls.py), one line per role: that its
    user authenticates and that the cluster holds every ACL it needs (FAIL naming the missing
    ones). Nothing on a cluster without them (the single-node profile: PLAINTEXT)."""
    from cinestream.kafka import acls

    if not acls.managed(settings):
        return []
    fix = "cinestream topics create  (creates every role's ACLs; `cinestream up` also the users)"
    try:
        present: dict[str, set[acls.Grant]] | None = acls.present_grants(settings)
        unlisted = ""
    except Exception as exc:  # noqa: BLE001 (any refusal or failure is said on the line)
        present, unlisted = None, first_line(exc)
    missing = acls.missing_grants(acls.acl_table(settings), present or {})
    checks = []
    for role, grants in acls.acl_table(settings).items():
        role_settings = settings.for_kafka_role(role)
        principal = f"User:{role_settings.resolved_kafka_sasl_username}"
        try:
            admin.list_topics(role_settings)
        except (ServiceUnavailable, ValueError) as exc:
            users = "cinestream up  (creates every role's user a cluster formatted before lacks)"
            checks.append(Check("FAIL", "principal", f"{role} ({principal}): {exc}", users))
            continue
        if role == acls.ADMIN:
            checks.append(Check("OK", "principal", f"{role} ({principal}): a super user"))
        elif present is None:
            checks.append(
                Check(
                    "WARN",
                    "principal",
                    f"{role} ({principal}) authenticates; its ACLs could not be listed as "
                    f"User:{settings.resolved_kafka_sasl_username} ({unlisted})",
                    "run doctor as the admin (CINESTREAM_KAFKA_ROLE=admin)",
                )
            )
        elif missing.get(role):
            lacks = ", ".join(str(g) for g in missing[role])
            checks.append(
                Check(
                    "FAIL",
                    "principal",
                    f"{role} ({principal}) is refused what it needs: no ACL allows {lacks}",
                    fix,
                )
            )
        else:
            checks.append(
                Check("OK", "principal", f"{role} ({principal}): its {len(grants)} ACLs in place")
            )
    return checks
