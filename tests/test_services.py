"""The test services themselves: the S3 server must start even when the host is busy."""
import socket

import pytest

from tests.services import _ephemeral_ports, free_port_block, plan_s3_server


def test_planned_ports_avoid_the_ranges_others_take_ports_from():
    ephemeral = _ephemeral_ports()
    for _ in range(50):
        p = free_port_block()
        for q in (p, p + 10_000):
            assert q not in ephemeral and not 10_002 <= q <= 19_999, q


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_s3_server_starts_when_a_planned_port_was_taken_meanwhile(tmp_path):
    server = plan_s3_server(tmp_path / "s3")
    taken = server.ports["volume.port"]
    # What Ray or an outgoing connection did to CI's run: the port is bound before weed starts.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        try:
            server.start()
            assert server.ports["volume.port"] != taken
            assert server.fs().ls("") == []
        finally:
            server.stop()
    assert "Port allocation failed" in server.log_path.read_text()
