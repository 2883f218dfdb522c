"""``configure_client`` and the TLS fields of ``MqttConfig`` (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from edge_agent.config import MqttConfig
from edge_agent.delivery.mqtt_security import configure_client


def _client() -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id="t")


def test_plain_config_sets_nothing() -> None:
    client = _client()
    configure_client(client, MqttConfig())
    assert client._username is None
    assert client._ssl is False


def test_credentials_are_applied() -> None:
    client = _client()
    configure_client(client, MqttConfig(username="dev-1", password="s3cret"))
    assert client._username == b"dev-1"
    assert client._password == b"s3cret"


def test_tls_flag_uses_system_cas() -> None:
    client = _client()
    cfg = MqttConfig(tls=True, port=8883)
    assert cfg.uses_tls
    configure_client(client, cfg)
    assert client._ssl is True


def test_cert_needs_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="tls_cert and tls_key"):
        MqttConfig(tls_cert=tmp_path / "c.pem")


def test_missing_ca_file_fails_early(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        configure_client(_client(), MqttConfig(tls_ca=tmp_path / "nope.pem"))


def test_password_file_is_read_and_its_newline_dropped(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("p#ss word\n")
    client = _client()
    configure_client(client, MqttConfig(username="dev-1", password_file=secret))
    assert client._password == b"p#ss word"


def test_password_file_problems_name_the_setting(tmp_path: Path) -> None:
    missing = MqttConfig(username="dev-1", password_file=tmp_path / "nope")
    with pytest.raises(ValueError, match=r"mqtt.password_file .*nope: No such file"):
        configure_client(_client(), missing)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        configure_client(_client(), MqttConfig(username="dev-1", password_file=empty))
    with pytest.raises(ValidationError, match="alternatives"):
        MqttConfig(password="x", password_file=empty)
