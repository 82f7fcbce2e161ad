"""ttbridge's clients on a secured cluster (app/job/kafka_security.py), against a real broker's
TLS and SASL listeners (the `secured_kafka` fixture): topics are created and records go round
through our own clients on each; a wrong password, an unknown CA or a name the certificate lacks
fail at once with the reason; the password shows nowhere, not even in aiokafka's debug log."""
import asyncio
import io
import logging
import os
import ssl
import subprocess
import sys
import time

import faust
import pytest
from aiokafka import AIOKafkaConsumer
from faust.types.auth import AuthProtocol

from app.devtools.certificates import make_certificates
from app.job.durable import BatchWriter
from app.job.kafka_security import client_options, faust_credentials
from app.job.records import dead_letter, encode
from app.job.replay import Filter, replay
from app.job.topics import create_topics, load_specs, partition_count
from app.settings import SettingsError, load
from tests.secured_kafka import PASSWORD, USER

WRONG = "wrong-Pa55-also-never-printed-2b9c"


def named(env: dict, unique: str) -> dict:
    """Topics and groups of this test's own on the shared secured broker."""
    return {**env, "TTBRIDGE_APP_ID": f"sec{unique}", "TTBRIDGE_TOPIC_CLICKS": f"clicks-{unique}",
            "TTBRIDGE_TOPIC_EVENTS": f"events-{unique}", "TTBRIDGE_TOPIC_RETRY": f"retry-{unique}",
            "TTBRIDGE_TOPIC_DLQ": f"dlq-{unique}"}


# -- options, without a broker ------------------------------------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


def test_plaintext_clients_are_built_as_before():
    settings = load({})
    assert client_options(settings) == {}
    assert faust_credentials(settings) is None


def test_tls_verifies_the_broker_with_one_context_for_every_client(certs):
    settings = load({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(certs.ca)})
    options = client_options(settings)
    assert options.keys() == {"security_protocol", "ssl_context"} and options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname is True
    assert client_options(load({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(certs.ca)}))[
        "ssl_context"] is context  # built once, not per client
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SSLCredentials) and credentials.context is context

    relaxed = load({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(certs.ca),
                    "KAFKA_SSL_CHECK_HOSTNAME": "false"})
    context = client_options(relaxed)["ssl_context"]
    assert context.check_hostname is False and context.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize("protocol, faust_protocol", [("SASL_SSL", AuthProtocol.SASL_SSL),
                                                      ("SASL_PLAINTEXT", AuthProtocol.SASL_PLAINTEXT)])
def test_sasl_options_for_aiokafka_and_faust(certs, protocol, faust_protocol):
    env = {"KAFKA_SECURITY_PROTOCOL": protocol, "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
           "KAFKA_SASL_USERNAME": USER, "KAFKA_SASL_PASSWORD": PASSWORD}
    if protocol == "SASL_SSL":
        env["KAFKA_SSL_CAFILE"] = str(certs.ca)
    settings = load(env)
    options = client_options(settings)
    assert {k: v for k, v in options.items() if k != "ssl_context"} == {
        "security_protocol": protocol, "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": USER, "sasl_plain_password": PASSWORD}
    assert ("ssl_context" in options) is (protocol == "SASL_SSL")
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.protocol, credentials.mechanism.value, credentials.username,
            credentials.password) == (faust_protocol, "SCRAM-SHA-512", USER, PASSWORD)
    assert credentials.ssl_context is options.get("ssl_context")
    assert PASSWORD not in repr(credentials)


def test_files_that_are_not_what_their_variable_says_are_named(certs, tmp_path):
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")

    def refusal(**env):
        with pytest.raises(SettingsError) as e:
            client_options(load({"KAFKA_SECURITY_PROTOCOL": "SSL", **env}))
        return str(e.value)

    assert refusal(KAFKA_SSL_CAFILE=str(not_pem)).startswith(
        f"KAFKA_SSL_CAFILE: {str(not_pem)!r} holds no CA certificate in PEM (")
    # An encrypted key without its password would make OpenSSL prompt on the terminal.
    assert refusal(KAFKA_SSL_CERTFILE=str(certs.client_cert), KAFKA_SSL_KEYFILE=str(certs.client_key)) == (
        f"KAFKA_SSL_KEY_PASSWORD: required, the key in {str(certs.client_key)!r} is encrypted")
    assert refusal(KAFKA_SSL_CERTFILE=str(certs.client_cert), KAFKA_SSL_KEYFILE=str(certs.client_key),
                   KAFKA_SSL_KEY_PASSWORD="not-it").startswith(
        f"KAFKA_SSL_CERTFILE: cannot load {str(certs.client_cert)!r} with its key: the key does not "
        "decrypt with KAFKA_SSL_KEY_PASSWORD, or is not the key of this certificate (")
    assert refusal(KAFKA_SSL_CERTFILE=str(not_pem)).startswith(
        f"KAFKA_SSL_CERTFILE: cannot load {str(not_pem)!r} with its key: no PEM certificate, or no PEM "
        "key that belongs to it (")


# -- against the real listeners -----------------------------------------------------------------

LISTENERS = [
    pytest.param("SSL", None, id="SSL-client-certificate"),
    pytest.param("SASL_SSL", "SCRAM-SHA-512", id="SASL_SSL-SCRAM-SHA-512"),
    pytest.param("SASL_PLAINTEXT", "SCRAM-SHA-256", id="SASL_PLAINTEXT-SCRAM-SHA-256"),
    pytest.param("SASL_SSL", "PLAIN", id="SASL_SSL-PLAIN"),
]


@pytest.mark.parametrize("protocol, mechanism", LISTENERS)
async def test_topics_and_a_roundtrip_through_our_clients(secured_kafka, unique, protocol, mechanism):
    env = secured_kafka.env(protocol, mechanism, client_certificate=protocol == "SSL")
    settings = load(named(env, unique))
    lines = await create_topics(settings)
    assert len(lines) == len(load_specs(settings)) and all(": created (" in line for line in lines)
    security = client_options(settings)
    assert await partition_count(settings.bootstrap_servers, settings.topic_events, security) == 6

    # A dead letter written by the durable writer, replayed to its source topic by `replay`
    # (its own admin, consumer and producer), read back by a consumer with the same options.
    original = b'{"not": "json"'
    record = dead_letter("invalid_json", "bad input", "decode", time.time(), original=original,
                         source={"topic": settings.topic_events, "partition": 0, "offset": 0})
    writer = BatchWriter(settings.bootstrap_servers, {"dlq": settings.topic_dlq}, security)
    try:
        await writer([("dlq", None, value) for value in encode(record)])
    finally:
        await writer.stop()
    summary = await replay(settings, Filter(), out=io.StringIO())
    assert (summary.scanned, summary.to_source) == (1, 1)
    consumer = AIOKafkaConsumer(settings.topic_events, bootstrap_servers=settings.bootstrap_servers,
                                auto_offset_reset="earliest", group_id=None, **security)
    await consumer.start()
    try:
        got = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    assert got.value == original


def topics_create(env: dict) -> tuple[subprocess.CompletedProcess, float]:
    own = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "TTBRIDGE_", "TIKTOK_"))}
    t = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "app", "topics", "create"], env={**own, **env},
                          capture_output=True, text=True, timeout=120)
    return done, time.monotonic() - t


def test_a_wrong_password_fails_at_once_saying_so(secured_kafka, unique):
    env = named(secured_kafka.env("SASL_SSL", "SCRAM-SHA-512", password=WRONG), unique)
    done, took = topics_create(env)
    assert done.returncode == 1 and took < 30
    assert done.stderr == (  # that line alone: aiokafka's own errors of the attempt are not printed
        f"ttbridge topics: cannot connect to Kafka over SASL_SSL, SCRAM-SHA-512 as 'alice': "
        f"{env['KAFKA_BOOTSTRAP_SERVERS']}: [Error 58] SaslAuthenticationFailed: Authentication failed "
        "during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512\n")
    assert WRONG not in done.stdout + done.stderr


@pytest.mark.parametrize("protocol, mechanism", [("SASL_PLAINTEXT", "PLAIN"), ("SASL_SSL", "SCRAM-SHA-256")])
async def test_no_password_in_the_logs_of_a_failed_or_a_good_login(secured_kafka, unique, caplog,
                                                                   protocol, mechanism):
    # DEBUG on aiokafka: it logs each request it sends, PLAIN's login (user and password) too.
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="aiokafka")
    wrong = load(named(secured_kafka.env(protocol, mechanism, password=WRONG), unique))
    with pytest.raises(RuntimeError) as e:
        await create_topics(wrong)
    assert "SaslAuthenticationFailed" in str(e.value)
    await create_topics(load(named(secured_kafka.env(protocol, mechanism), unique)))
    for secret in (WRONG, PASSWORD):
        assert secret not in caplog.text and secret not in str(e.value) and secret not in repr(wrong)
    assert "<SaslAuthenticate, redacted>" in caplog.text  # the logins were logged, without payload


async def test_an_unknown_ca_fails_at_once_saying_so(secured_kafka, unique, tmp_path):
    other = make_certificates(tmp_path, name="another CA")
    env = named(secured_kafka.env("SASL_SSL", "SCRAM-SHA-512", cafile=other.ca), unique)
    t = time.monotonic()
    with pytest.raises(RuntimeError) as e:
        await create_topics(load(env))
    assert time.monotonic() - t < 20
    # (OpenSSL's own words follow: the broker sends its CA along, "self-signed certificate in
    # certificate chain"; one that sends only its certificate gets "unable to get local issuer".)
    assert str(e.value).startswith(
        f"cannot connect to Kafka over SASL_SSL, SCRAM-SHA-512 as 'alice': {env['KAFKA_BOOTSTRAP_SERVERS']}: "
        "SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: ")


async def test_the_broker_name_is_checked_against_its_certificate(secured_kafka, unique):
    # "127.1" reaches 127.0.0.1, but the certificate names only 127.0.0.1 and localhost.
    env = named(secured_kafka.env("SSL", client_certificate=True), unique)
    env["KAFKA_BOOTSTRAP_SERVERS"] = env["KAFKA_BOOTSTRAP_SERVERS"].replace("127.0.0.1", "127.1")
    with pytest.raises(RuntimeError) as e:
        await create_topics(load(env))
    assert "certificate verify failed: Hostname mismatch, certificate is not valid for '127.1'" in str(e.value)
    lines = await create_topics(load({**env, "KAFKA_SSL_CHECK_HOSTNAME": "false"}))
    assert all(": created (" in line for line in lines)
