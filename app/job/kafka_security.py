"""How ttbridge's Kafka clients reach a secured cluster: TLS, SASL (PLAIN, SCRAM), or both.

Every client ttbridge creates takes its security from here — faust's consumer, producer and
topic admin (`faust_credentials`), and the aiokafka clients of our own (`client_options`): the
intake, the durable writer, the retry tiers, the bulk restore, replay and `topics create`. A
cluster that needs TLS or a login gets it on every connection or the settings refuse to start.
What the variables mean and how they combine is checked in app/settings.py (KafkaSecurity).
"""
from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from typing import TYPE_CHECKING, Any

from app.settings import KafkaSecurity, Settings, SettingsError

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

__all__ = ["client_options", "faust_credentials", "ssl_context", "why_unreachable"]

# Kafka's API key of SaslAuthenticate: its request carries the PLAIN mechanism's password.
_SASL_AUTHENTICATE = 36


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (consumer, producer, admin, connection); empty
    for PLAINTEXT, so an unsecured cluster's clients are built exactly as before."""
    security = settings.kafka_security
    if security.protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.tls:
        options["ssl_context"] = ssl_context(security)
    if security.sasl:
        _keep_passwords_out_of_aiokafka_logs()
        options.update(sasl_mechanism=security.sasl_mechanism,
                       sasl_plain_username=security.sasl_username,
                       sasl_plain_password=security.sasl_password.reveal())
    return options


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """faust.App's `broker_credentials`: faust hands them to its consumer, producer and topic
    admin alike (faust.transport.drivers.aiokafka.credentials_to_aiokafka_auth). None for
    PLAINTEXT, faust's default."""
    import faust

    security = settings.kafka_security
    context = ssl_context(security) if security.tls else None
    if security.sasl:
        _keep_passwords_out_of_aiokafka_logs()
        # The protocol follows the context: SASL_SSL with one, SASL_PLAINTEXT without.
        return faust.SASLCredentials(username=security.sasl_username,
                                     password=security.sasl_password.reveal(),
                                     mechanism=security.sasl_mechanism, ssl_context=context)
    if context is not None:
        return faust.SSLCredentials(context)
    return None


@functools.lru_cache(maxsize=None)
def ssl_context(security: KafkaSecurity) -> ssl.SSLContext:
    """One context per process for every client (loading a CA bundle costs milliseconds, and
    every connection of every client would pay it). A rotated certificate needs a restart.
    A file that is not what its variable says raises SettingsError naming the variable."""
    try:
        # The system's CAs unless a CA file is given (public CAs: MSK, Confluent Cloud).
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=security.ssl_cafile)
    except (ssl.SSLError, OSError) as e:
        raise SettingsError(f"KAFKA_SSL_CAFILE: {security.ssl_cafile!r} holds no CA certificate "
                            f"in PEM ({e})") from None
    if security.ssl_certfile:
        key = security.ssl_keyfile or security.ssl_certfile
        try:
            # Without a password OpenSSL would prompt on the terminal for an encrypted key, and a
            # worker would hang there; the callable is asked only for an encrypted key.
            context.load_cert_chain(security.ssl_certfile, security.ssl_keyfile,
                                    security.ssl_key_password.reveal() or _no_key_password)
        except _KeyPasswordMissing:
            raise SettingsError(f"KAFKA_SSL_KEY_PASSWORD: required, the key in {key!r} is "
                                "encrypted") from None
        except (ssl.SSLError, OSError) as e:
            what = ("the key does not decrypt with KAFKA_SSL_KEY_PASSWORD, or is not the key of "
                    "this certificate" if security.ssl_key_password
                    else "no PEM certificate, or no PEM key that belongs to it")
            raise SettingsError(f"KAFKA_SSL_CERTFILE: cannot load {security.ssl_certfile!r} with "
                                f"its key: {what} ({e})") from None
    # Verification of the chain stays on regardless; this only stops matching the broker's
    # name against its certificate (brokers reached by an address their certificate lacks).
    context.check_hostname = security.ssl_check_hostname
    return context


class _KeyPasswordMissing(Exception):
    pass


def _no_key_password() -> str:
    raise _KeyPasswordMissing


async def why_unreachable(settings: Settings, timeout_s: float = 15.0) -> str:
    """One line saying why the bootstrap servers refused a connection. aiokafka's clients only
    log the cause (a failed TLS handshake, failed authentication) and raise "Unable to
    bootstrap"; one connection of our own per server brings the cause back."""
    from aiokafka.conn import create_conn

    options = client_options(settings)
    security = settings.kafka_security
    how = security.protocol
    if security.sasl:
        how += f", {security.sasl_mechanism} as {security.sasl_username!r}"
    reasons = []
    for server in (s.strip() for s in settings.bootstrap_servers.split(",") if s.strip()):
        host, _, port = server.rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(host.strip("[]") or server, int(port) if port.isdigit() else 9092,
                            request_timeout_ms=int(timeout_s * 1000), **options), timeout_s)
        except Exception as e:  # noqa: BLE001 - whatever it is, it is the answer
            reasons.append(f"{server}: {_described(e)}")
        else:
            conn.close()
            reasons.append(f"{server}: a connection works now")
    return f"cannot connect to Kafka over {how}: " + "; ".join(reasons)


def _described(error: BaseException) -> str:
    from aiokafka.errors import IllegalSaslStateError, KafkaConnectionError

    name, text = type(error).__name__, str(error)
    if isinstance(error, asyncio.TimeoutError):
        return "no answer in time"
    if isinstance(error, IllegalSaslStateError):
        return f"this listener does not do SASL ({name})"
    if isinstance(error, (ConnectionResetError, ssl.SSLEOFError)) or (
            isinstance(error, KafkaConnectionError) and text.endswith(" closed")):
        # What a broker does to a client of the wrong protocol, or without the client
        # certificate its listener requires: it hangs up, with no word on why.
        return (f"the broker closed the connection ({name}): is the listener for another security "
                "protocol, or does it require a client certificate (KAFKA_SSL_CERTFILE)?")
    # aiokafka's errors name themselves ("[Error 58] SaslAuthenticationFailed: ..."); others don't.
    return text if text.startswith(("[Error", name)) else f"{name}: {text}"


class _RedactSaslAuthenticate(logging.Filter):
    """aiokafka logs every request it sends at DEBUG, the SASL PLAIN login (user and password in
    the clear) too. The request's record keeps its line, without the payload."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(getattr(a, "API_KEY", None) == _SASL_AUTHENTICATE for a in args):
            record.args = tuple("<SaslAuthenticate, redacted>"
                                if getattr(a, "API_KEY", None) == _SASL_AUTHENTICATE else a for a in args)
        return True


@functools.lru_cache(maxsize=None)  # once per process
def _keep_passwords_out_of_aiokafka_logs() -> None:
    # On the emitting logger: a record's own logger's filters run whatever handlers faust or
    # the operator configure later.
    logging.getLogger("aiokafka.conn").addFilter(_RedactSaslAuthenticate())
