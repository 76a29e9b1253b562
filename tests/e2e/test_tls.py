"""TLS between nodes and for the CLI, with certificates made at test time (trustme): a
follower replicates over https; a wrong CA, an expired certificate, plain http against an
https node and a missing client certificate fail with clear errors and apply nothing."""

from __future__ import annotations

import datetime
import sqlite3
from pathlib import Path

import pytest

from ..helpers.apps import app_db, values
from ..helpers.daemons import Cluster, Daemon, free_port, insert, sqlrepl, wait_until

trustme = pytest.importorskip("trustme")


class Certs:
    def __init__(self, tmp: Path) -> None:
        self.ca = trustme.CA()
        self.ca_file = tmp / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.other_ca = tmp / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(self.other_ca))
        self.server = self.leaf(tmp / "server.pem", "127.0.0.1")
        past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        self.expired = self.leaf(
            tmp / "expired.pem", "127.0.0.1", not_before=past, not_after=past.replace(month=2)
        )
        self.client = self.leaf(tmp / "client.pem", "follower.example")

    def leaf(self, path: Path, *names: str, **dates: datetime.datetime) -> Path:
        cert = self.ca.issue_cert(*names, **dates)
        cert.private_key_and_cert_chain_pem.write_to_path(str(path))
        return path


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs(tmp_path)


def https_leader(tmp_path: Path, cluster: Cluster, cert: Path, *extra: str) -> Daemon:
    db = app_db(tmp_path / "a.db")
    port = free_port()
    args = ["leader", str(db), "--listen", f"127.0.0.1:{port}", "--tls-cert", str(cert), *extra]
    leader = Daemon(tmp_path, f"tls-leader-{port}", args, port)
    leader.url = f"https://127.0.0.1:{port}"
    cluster.daemons.append(leader)
    leader.start(ready=False)
    return leader


def follower(tmp_path: Path, cluster: Cluster, leader: str, *tls: str) -> Daemon:
    port = free_port()
    args = [*tls, "follower", str(tmp_path / "b.db"), "--leader", leader,
            "--listen", f"127.0.0.1:{port}"]  # fmt: skip
    node = Daemon(tmp_path, f"tls-follower-{port}", args, port)
    cluster.daemons.append(node)
    return node.start(ready=False)


def status(url: str, *tls: str) -> tuple[int, str]:
    result = sqlrepl(*tls, "status", "--json", url)
    assert "Traceback" not in result.stderr
    return result.returncode, result.stdout + result.stderr


def test_a_follower_replicates_over_https_and_the_cli_checks_certificates(
    tmp_path: Path, cluster: Cluster, certs: Certs
) -> None:
    """With the right CA the follower replicates and `status` works over https; with
    another CA, or over plain http, `status` fails with a clear error."""
    leader = https_leader(tmp_path, cluster, certs.server)
    ca = ["--tls-ca", str(certs.ca_file)]
    wait_until(lambda: status(leader.url, *ca)[0] == 0, "the https leader")
    insert(tmp_path / "a.db", "over tls")
    node = follower(tmp_path, cluster, leader.url, *ca)
    wait_until(lambda: (tmp_path / "b.db").exists() and "over tls" in values(tmp_path / "b.db"),
               "the row on the follower")  # fmt: skip
    code, said = status(leader.url, "--tls-ca", str(certs.other_ca))
    assert code == 1 and "certificate" in said.lower(), said
    code, said = status(leader.url.replace("https", "http"), *ca)
    assert code == 1 and "https" in said, said
    assert node.proc is not None and node.proc.poll() is None


def test_a_wrong_ca_or_an_expired_certificate_applies_nothing(
    tmp_path: Path, cluster: Cluster, certs: Certs
) -> None:
    """A follower trusting another CA, and one facing an expired certificate: each
    reports the certificate problem and never creates its database."""
    for cert, trust, why in (
        (certs.server, certs.other_ca, "TLS failed: unable to get local issuer"),
        (certs.expired, certs.ca_file, "TLS failed: certificate has expired"),
    ):
        where = tmp_path / why.split(": ")[1].replace(" ", "-")
        where.mkdir()
        leader = https_leader(where, cluster, cert)
        node = follower(where, cluster, leader.url, "--tls-ca", str(trust))

        def reported(node: Daemon = node, why: str = why) -> bool:
            return why in node.log()

        wait_until(reported, f"the follower to report: {why}")
        assert not (where / "b.db").exists()
        node.stop()
        leader.stop()


def test_mutual_tls_refuses_a_client_without_a_certificate(
    tmp_path: Path, cluster: Cluster, certs: Certs
) -> None:
    """A leader with --tls-client-ca serves only clients presenting a certificate its CA
    signed."""
    leader = https_leader(tmp_path, cluster, certs.server, "--tls-client-ca", str(certs.ca_file))
    ca = ["--tls-ca", str(certs.ca_file)]
    with_cert = [*ca, "--tls-client-cert", str(certs.client)]
    wait_until(lambda: status(leader.url, *with_cert)[0] == 0, "the leader, with a cert")
    code, said = status(leader.url, *ca)
    assert code == 1, said
    insert(tmp_path / "a.db", "mtls")
    follower(tmp_path, cluster, leader.url, *with_cert)
    wait_until(lambda: (tmp_path / "b.db").exists() and "mtls" in values(tmp_path / "b.db"),
               "the row over mutual TLS")  # fmt: skip
    assert sqlite3.connect(tmp_path / "b.db").execute("SELECT count(*) FROM t").fetchone() == (1,)
