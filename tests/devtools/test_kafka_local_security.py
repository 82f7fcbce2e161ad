"""The local broker's secured listeners (SecuredListeners) are real: the SSL listener wants a
client certificate from our CA, each SASL listener lets its users in with PLAIN, SCRAM-SHA-256
and SCRAM-SHA-512 and no one without the password. Checked with plain aiokafka and ssl, not
ttbridge's own client options (tests/job/test_kafka_security.py covers those)."""
import ssl

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from app.devtools.certificates import make_certificates
from app.devtools.kafka_local import BrokerError, SecuredListeners, _server_properties
from tests.secured_kafka import PASSWORD, USER


def context(certs, client_certificate: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    if client_certificate:
        ctx.load_cert_chain(str(certs.client_cert), str(certs.client_key), certs.client_key_password)
    return ctx


async def lets_in(bootstrap: str, **security) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, **security)
    try:
        await admin.start()
        await admin.describe_topics(None)
        return True
    except KafkaConnectionError:
        return False
    finally:
        await admin.close()


async def test_the_ssl_listener_wants_a_client_certificate_from_the_ca(secured_kafka):
    certs, ssl_listener = secured_kafka.certs, secured_kafka.broker.listener("SSL")
    assert await lets_in(ssl_listener, security_protocol="SSL", ssl_context=context(certs, True))
    assert not await lets_in(ssl_listener, security_protocol="SSL", ssl_context=context(certs))
    # The broker's certificate names 127.0.0.1: the hostname check (on by default) passes.
    assert context(certs).check_hostname


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
async def test_each_sasl_listener_lets_its_user_in_with_each_mechanism(secured_kafka, protocol, mechanism):
    listener = secured_kafka.broker.listener(protocol)
    tls = {"ssl_context": context(secured_kafka.certs)} if protocol == "SASL_SSL" else {}
    login = dict(security_protocol=protocol, sasl_mechanism=mechanism, sasl_plain_username=USER, **tls)
    assert await lets_in(listener, sasl_plain_password=PASSWORD, **login)
    assert not await lets_in(listener, sasl_plain_password=PASSWORD + "x", **login)


def test_listeners_are_named_and_configured(secured_kafka):
    broker = secured_kafka.broker
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"  # PLAINTEXT stays, for the broker itself
    ports = broker.secured.ports()
    assert {name: broker.listener(name) for name in ports} == {
        name: f"127.0.0.1:{port}" for name, port in ports.items()}
    assert list(ports) == ["SSL", "SASL_SSL", "SASL_PLAINTEXT"]
    props = (broker.data_dir / "server.properties").read_text().splitlines()
    assert (f"advertised.listeners=PLAINTEXT://127.0.0.1:{broker.port},SSL://127.0.0.1:{ports['SSL']},"
            f"SASL_SSL://127.0.0.1:{ports['SASL_SSL']},SASL_PLAINTEXT://127.0.0.1:{ports['SASL_PLAINTEXT']}"
            ) in props
    assert "inter.broker.listener.name=PLAINTEXT" in props
    assert "listener.name.ssl.ssl.client.auth=required" in props
    assert "listener.name.sasl_ssl.ssl.client.auth=none" in props
    assert "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512" in props


def test_a_plaintext_broker_is_configured_as_before():
    props = _server_properties("/tmp/logs", 9092, 9093)
    assert "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093" in props.splitlines()
    assert "ssl." not in props and "sasl." not in props


def test_what_a_secured_listener_cannot_be_built_from_is_refused(tmp_path):
    with pytest.raises(BrokerError, match="TLS listeners need certificates"):
        SecuredListeners(ssl_port=1)
    with pytest.raises(BrokerError, match="SASL listeners need at least one user"):
        SecuredListeners(sasl_plaintext_port=1)
    with pytest.raises(BrokerError, match=r"letters, digits.*got 'pa,ss'"):
        SecuredListeners(make_certificates(tmp_path), sasl_ssl_port=1, users={"bob": "pa,ss"})
