"""A real broker with TLS and SASL listeners, and the environment ttbridge needs for each (the
`secured_kafka` fixture in conftest.py starts one for the whole run, only when a test asks)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.devtools.certificates import Certificates, make_certificates
from app.devtools.kafka_local import Broker, SecuredListeners, free_port

USER = "alice"
# Distinctive, so a leak into a log, a repr or an error is found by a plain substring search.
PASSWORD = "alice-Pa55-never-printed-7f3e"


@dataclass
class SecuredKafka:
    broker: Broker
    certs: Certificates

    def env(self, protocol: str, mechanism: str | None = None, *, password: str = PASSWORD,
            cafile: Path | None = None, client_certificate: bool = False) -> dict[str, str]:
        """ttbridge's KAFKA_* variables for the listener of `protocol`."""
        env = {"KAFKA_BOOTSTRAP_SERVERS": self.broker.listener(protocol),
               "KAFKA_SECURITY_PROTOCOL": protocol}
        if protocol.endswith("SSL"):
            env["KAFKA_SSL_CAFILE"] = str(cafile or self.certs.ca)
        if client_certificate:
            env.update(KAFKA_SSL_CERTFILE=str(self.certs.client_cert),
                       KAFKA_SSL_KEYFILE=str(self.certs.client_key),
                       KAFKA_SSL_KEY_PASSWORD=self.certs.client_key_password)
        if mechanism:
            env.update(KAFKA_SASL_MECHANISM=mechanism, KAFKA_SASL_USERNAME=USER,
                       KAFKA_SASL_PASSWORD=password)
        return env


def start(directory: Path) -> SecuredKafka:
    """One broker with every listener: PLAINTEXT, SSL (client certificate required), SASL_SSL
    and SASL_PLAINTEXT (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)."""
    certs = make_certificates(directory / "certs")
    secured = SecuredListeners(certs, ssl_port=free_port(), sasl_ssl_port=free_port(),
                               sasl_plaintext_port=free_port(), users={USER: PASSWORD})
    broker = Broker(directory / "broker", free_port(), free_port(), secured)
    broker.start()
    return SecuredKafka(broker, certs)
