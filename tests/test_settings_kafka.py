"""Kafka security settings (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*): what they read,
every combination they refuse with one line naming the variable, and a password that never shows."""
import pytest

from app.settings import KafkaSecurity, Secret, SettingsError, load

PASSWORD = "pw-Never-Shown-0451"


@pytest.fixture
def ca(tmp_path):
    path = tmp_path / "ca.pem"
    path.write_text("(only its existence is checked here)")
    return str(path)


def test_plaintext_is_the_default():
    assert load({}).kafka_security == KafkaSecurity()
    assert KafkaSecurity().protocol == "PLAINTEXT" and KafkaSecurity().ssl_check_hostname is True


def test_every_variable_is_read(ca):
    s = load({"KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KAFKA_SASL_MECHANISM": "scram-sha-512",
              "KAFKA_SASL_USERNAME": " svc-ttbridge ", "KAFKA_SASL_PASSWORD": PASSWORD + "\n",
              "KAFKA_SSL_CAFILE": ca, "KAFKA_SSL_CERTFILE": ca, "KAFKA_SSL_KEYFILE": ca,
              "KAFKA_SSL_KEY_PASSWORD": "key-pass", "KAFKA_SSL_CHECK_HOSTNAME": "FALSE"})
    # Names in any case, as Kafka's clients take them; a secret loses only its line ending.
    assert s.kafka_security == KafkaSecurity(
        protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="svc-ttbridge",
        sasl_password=Secret(PASSWORD), ssl_cafile=ca, ssl_certfile=ca, ssl_keyfile=ca,
        ssl_key_password=Secret("key-pass"), ssl_check_hostname=False)


def test_the_passwords_never_show():
    s = load({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN",
              "KAFKA_SASL_USERNAME": "alice", "KAFKA_SASL_PASSWORD": PASSWORD})
    for text in (repr(s), str(s), repr(s.kafka_security), f"{s.kafka_security.sasl_password}"):
        assert PASSWORD not in text
    assert "sasl_password=Secret('***')" in repr(s.kafka_security)
    assert s.kafka_security.sasl_password.reveal() == PASSWORD


SASL = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "KAFKA_SASL_USERNAME": "alice", "KAFKA_SASL_PASSWORD": PASSWORD}


@pytest.mark.parametrize("env, message", [
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"},
     "KAFKA_SECURITY_PROTOCOL: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, got 'TLS'"),
    ({**SASL, "KAFKA_SASL_MECHANISM": ""},
     "KAFKA_SASL_MECHANISM: required when KAFKA_SECURITY_PROTOCOL is SASL_SSL (PLAIN, SCRAM-SHA-256 "
     "or SCRAM-SHA-512)"),
    ({**SASL, "KAFKA_SASL_USERNAME": ""}, "KAFKA_SASL_USERNAME: required when KAFKA_SECURITY_PROTOCOL "
     "is SASL_SSL"),
    ({**SASL, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_PASSWORD": ""},
     "KAFKA_SASL_PASSWORD: required when KAFKA_SECURITY_PROTOCOL is SASL_PLAINTEXT"),
    ({**SASL, "KAFKA_SASL_MECHANISM": "SCRAM-SHA-1"},
     "KAFKA_SASL_MECHANISM: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got 'SCRAM-SHA-1'"),
    # aiokafka has them, but only with code of the operator's own.
    ({**SASL, "KAFKA_SASL_MECHANISM": "OAUTHBEARER"},
     "KAFKA_SASL_MECHANISM: OAUTHBEARER is not supported (it needs a token provider for your identity "
     "provider); use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
    ({**SASL, "KAFKA_SASL_MECHANISM": "GSSAPI"},
     "KAFKA_SASL_MECHANISM: GSSAPI is not supported (it needs Kerberos set up for the process); use "
     "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
    # Set but ignored by the protocol in force: the protocol is not what the operator thinks.
    ({"KAFKA_SASL_USERNAME": "alice", "KAFKA_SASL_PASSWORD": PASSWORD},
     "KAFKA_SASL_USERNAME: set, but KAFKA_SECURITY_PROTOCOL is PLAINTEXT (it is used with SASL_PLAINTEXT "
     "or SASL_SSL)"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SASL_MECHANISM": "PLAIN"},
     "KAFKA_SASL_MECHANISM: set, but KAFKA_SECURITY_PROTOCOL is SSL (it is used with SASL_PLAINTEXT or "
     "SASL_SSL)"),
    ({**SASL, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SSL_CAFILE": "/etc/kafka/ca.pem"},
     "KAFKA_SSL_CAFILE: set, but KAFKA_SECURITY_PROTOCOL is SASL_PLAINTEXT (it is used with SSL or "
     "SASL_SSL)"),
    ({"KAFKA_SSL_CHECK_HOSTNAME": "false"},
     "KAFKA_SSL_CHECK_HOSTNAME: set, but KAFKA_SECURITY_PROTOCOL is PLAINTEXT (it is used with SSL or "
     "SASL_SSL)"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CHECK_HOSTNAME": "no"},
     "KAFKA_SSL_CHECK_HOSTNAME: expected true or false, got 'no'"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
     "KAFKA_SSL_CAFILE: file '/nonexistent/ca.pem' does not exist"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": "/nonexistent/client.pem"},
     "KAFKA_SSL_CERTFILE: file '/nonexistent/client.pem' does not exist"),
])
def test_wrong_combinations_are_refused_with_one_line(env, message):
    with pytest.raises(SettingsError) as e:
        load(env)
    assert str(e.value) == message
    assert PASSWORD not in str(e.value)


def test_a_key_needs_its_certificate_and_a_key_password_a_key(ca):
    with pytest.raises(SettingsError) as e:
        load({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": ca})
    assert str(e.value) == ("KAFKA_SSL_KEYFILE: set without KAFKA_SSL_CERTFILE, the client certificate "
                            "it is the key of")
    with pytest.raises(SettingsError) as e:
        load({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEY_PASSWORD": "key-pass"})
    assert str(e.value) == ("KAFKA_SSL_KEY_PASSWORD: set without KAFKA_SSL_CERTFILE (it decrypts the "
                            "client certificate's key)")


def test_the_cli_prints_the_line_and_exits_2(capsys, monkeypatch):
    from app.cli import main

    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "alice")
    assert main(["topics", "create"]) == 2
    assert capsys.readouterr().err == ("ttbridge: configuration error: KAFKA_SASL_PASSWORD: required "
                                       "when KAFKA_SECURITY_PROTOCOL is SASL_SSL\n")
