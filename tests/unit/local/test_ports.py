"""A port another process holds is refused before a part of the stack starts on it."""

from __future__ import annotations

import os
import socket

import pytest

from cinestream.errors import CinestreamError
from cinestream.local.processes import ensure_port_free, listeners


def test_a_taken_port_is_refused_naming_who_holds_it() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert f"pid {os.getpid()} (" in " ".join(listeners(port))
        with pytest.raises(CinestreamError) as info:
            ensure_port_free(port, "Airflow's api-server", "CINESTREAM_AIRFLOW_PORT")
        message = str(info.value)
        assert f"port {port} for Airflow's api-server is taken by pid {os.getpid()} (" in message
        assert message.endswith("set CINESTREAM_AIRFLOW_PORT to a free port")
    ensure_port_free(port, "Airflow's api-server", "CINESTREAM_AIRFLOW_PORT")  # free again
    assert listeners(port) == []
