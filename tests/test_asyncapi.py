"""docs/asyncapi.yaml is generated from the contract and must stay in step with it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.contract import (
    _ID_PATTERN,
    CHANNELS,
    DEFAULT_TOPIC_ROOT,
    Channel,
    DeviceStatus,
    EventTopic,
    config_topic,
    health_topic,
    occupancy_topic,
    parse_topic,
    status_topic,
)
from edge_agent.tools import asyncapi

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "asyncapi.yaml"
REGENERATE = "docs/asyncapi.yaml is out of date: run `python -m edge_agent.tools.asyncapi`"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi.build_document()


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def test_committed_document_is_up_to_date() -> None:
    assert DOC.exists(), REGENERATE
    assert DOC.read_text(encoding="utf-8") == asyncapi.render(), REGENERATE


def test_generation_is_deterministic() -> None:
    assert asyncapi.render() == asyncapi.render()


def test_yaml_reads_back_as_the_document(document: dict[str, Any]) -> None:
    loaded = yaml.safe_load(asyncapi.render())
    assert loaded == json.loads(json.dumps(document))


@pytest.mark.parametrize(
    "value",
    [
        "yes",
        "No",
        "null",
        "~",
        "",
        " padded ",
        "a: b",
        "x #y",
        "#ref",
        "1.0",
        "0x1F",
        "1e3",
        "- item",
        "line\nbreak",
        "tab\there",
        "quote\"s and 'single'",
        "back\\slash",
        "é ünïcode",
        "{brace}",
        "[bracket]",
        "*alias",
        "&anchor",
        "!tag",
        "%directive",
        "@at",
        "`tick",
        "trailing:",
        "?",
        "|",
        ">",
    ],
)
def test_emitter_round_trips_awkward_strings(value: str) -> None:
    data = {"key": value, value or "empty": [value, {"nested": value}]}
    assert yaml.safe_load(asyncapi.to_yaml(data)) == data


def test_emitter_round_trips_numbers_and_empties() -> None:
    data = {
        "ints": [0, -1, 2**63 - 1],
        "floats": [0.0, -0.5, 1e16, 1.5e-7, 3600000.0],
        "flags": [True, False, None],
        "empty": {"d": {}, "l": []},
    }
    assert yaml.safe_load(asyncapi.to_yaml(data)) == data


def test_top_level_structure(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert set(document) == {
        "asyncapi",
        "info",
        "defaultContentType",
        "servers",
        "channels",
        "operations",
        "components",
    }
    assert document["info"]["version"] == "1.2"  # topics v1, person event schema 2
    assert document["defaultContentType"] == "application/json"
    assert document["servers"]["broker"]["protocol"] == "mqtt"


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    found = refs(document)
    assert len(found) > 30
    for ref in found:
        assert resolve(document, ref) is not None, ref


def test_every_contract_model_is_a_message_and_a_schema(document: dict[str, Any]) -> None:
    components = document["components"]
    for spec in CHANNELS.values():
        name = spec.payload.__name__
        message = components["messages"][name]
        assert message["payload"] == {"$ref": f"#/components/schemas/{name}"}
        assert message["contentType"] == "application/json"
        # The schema is the model's own (modulo where its nested definitions live).
        own = spec.payload.model_json_schema(ref_template="#/components/schemas/{model}")
        nested = own.pop("$defs", {})
        assert components["schemas"][name] == own
        for sub, schema in nested.items():
            assert components["schemas"][sub] == schema
        # The examples are valid payloads.
        assert message["examples"]
        for example in message["examples"]:
            spec.payload.model_validate_json(json.dumps(example["payload"]))
    assert {m["name"] for m in components["messages"].values()} == {
        spec.payload.__name__ for spec in CHANNELS.values()
    }


def test_channel_addresses_match_the_topic_builders(document: dict[str, Any]) -> None:
    built = {
        Channel.EVENTS: str(EventTopic("site-a", "dev-1", "cam-1")),
        Channel.STATUS: status_topic("site-a", "dev-1"),
        Channel.HEALTH: health_topic("site-a", "dev-1"),
        Channel.OCCUPANCY: occupancy_topic("site-a", "dev-1", "cam-1"),
        Channel.CONFIG: config_topic("site-a", "dev-1"),
    }
    channels = document["channels"]
    assert set(channels) == {channel.value for channel in Channel}
    for channel, topic in built.items():
        entry = channels[channel.value]
        address = entry["address"]
        names = re.findall(r"\{(\w+)\}", address)
        assert set(names) == set(entry["parameters"]), channel
        filled = address.format(root="site-a", device_id="dev-1", camera_id="cam-1")
        assert filled == topic
        assert parse_topic(filled, "site-a").channel is channel
        for name in names:
            assert resolve(document, entry["parameters"][name]["$ref"])


def test_parameters_carry_the_id_pattern_and_root_default(document: dict[str, Any]) -> None:
    params = document["components"]["parameters"]
    assert params["root"]["default"] == DEFAULT_TOPIC_ROOT
    for name in ("device_id", "camera_id"):
        assert params[name]["x-pattern"] == _ID_PATTERN
        assert _ID_PATTERN in params[name]["description"]
        for example in params[name]["examples"]:
            assert re.match(_ID_PATTERN, example)


def test_operations_have_direction_qos_and_retain(document: dict[str, Any]) -> None:
    operations = document["operations"]
    assert len(operations) == len(CHANNELS)
    by_channel = {op["channel"]["$ref"].rsplit("/", 1)[1]: op for op in operations.values()}
    for channel, spec in CHANNELS.items():
        operation = by_channel[channel.value]
        assert operation["action"] == ("send" if spec.from_device else "receive")
        binding = operation["bindings"]["mqtt"]
        assert (binding["qos"], binding["retain"]) == (spec.qos, spec.retain)
        for message in operation["messages"]:
            assert message["$ref"].startswith(f"#/channels/{channel.value}/messages/")
            resolve(document, message["$ref"])
    assert by_channel["config"]["action"] == "receive"
    assert by_channel["status"]["bindings"]["mqtt"]["retain"] is True
    assert by_channel["events"]["bindings"]["mqtt"]["qos"] == 1


def test_last_will_in_the_server_binding_is_a_valid_status(document: dict[str, Any]) -> None:
    will = document["servers"]["broker"]["bindings"]["mqtt"]["lastWill"]
    assert will["topic"] == document["channels"]["status"]["address"]
    assert (will["qos"], will["retain"]) == (1, True)
    message = will["message"].replace("{device_id}", "dev-1")
    assert DeviceStatus.model_validate_json(message) == DeviceStatus.last_will("dev-1")


def test_check_mode_reports_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "asyncapi.yaml"
    assert asyncapi.main(["--output", str(target), "--check"]) == 1
    assert "python -m edge_agent.tools.asyncapi" in capsys.readouterr().err
    assert asyncapi.main(["--output", str(target)]) == 0
    assert asyncapi.main(["--output", str(target), "--check"]) == 0
    assert target.read_text(encoding="utf-8") == DOC.read_text(encoding="utf-8")


def test_every_json_example_in_the_contract_doc_is_a_valid_payload() -> None:
    text = (ROOT / "docs" / "mqtt-contract.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) >= len(CHANNELS)
    shown = set()
    for block in blocks:
        fits = []
        for spec in CHANNELS.values():
            try:
                spec.payload.model_validate_json(block)
            except ValueError:
                continue
            fits.append(spec.payload.__name__)
        assert len(fits) == 1, f"example fits {fits}:\n{block}"
        shown.update(fits)
    assert shown == {spec.payload.__name__ for spec in CHANNELS.values()}
