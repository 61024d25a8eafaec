"""Plan JSON and config validation; no TensorFlow."""

import json

import pytest

from aa_tflite.types import AAError, Bits, Lowering, Plan, SiteConfig


def test_plan_json_round_trip_keyed_by_name():
    plan = Plan({"b/conv_relu": SiteConfig(threshold=0.25, clip=4.0, bits=4),
                 "a_relu": SiteConfig(threshold=0.1)}, lowering="exact")
    text = plan.to_json()
    d = json.loads(text)
    assert d["schema_version"] == 1
    assert list(d["sites"]) == ["a_relu", "b/conv_relu"]  # sorted by name, not by position
    back = Plan.from_json(text)
    assert back == plan
    assert back.get("b/conv_relu").bits is Bits.INT4
    assert back.lowering is Lowering.EXACT
    assert back.get("unknown") == SiteConfig()


def test_plan_from_json_tolerates_missing_fields():
    plan = Plan.from_json('{"sites": {"s": {"threshold": 0.5}}}')
    assert plan.get("s") == SiteConfig(threshold=0.5, clip=None, bits=8)
    assert plan.lowering is Lowering.SHIFT


@pytest.mark.parametrize("text, fragment", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "'sites' object"),
    ('{"schema_version": 99, "sites": {}}', "Upgrade aa-tflite"),
])
def test_plan_from_json_errors(text, fragment):
    with pytest.raises(AAError, match=fragment):
        Plan.from_json(text)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"threshold": -1.0}, "threshold=-1.0"),
    ({"threshold": float("nan")}, "threshold=nan"),
    ({"threshold": 1.0, "clip": 0.0}, "clip=0.0"),
])
def test_site_config_rejects_bad_values(kwargs, fragment):
    with pytest.raises(AAError, match=fragment):
        SiteConfig(**kwargs)


@pytest.mark.parametrize("bits", [1, 7, 16, "four"])
def test_site_config_bits_must_come_from_the_precision_table(bits):
    with pytest.raises(AAError, match="bits must be one of"):
        SiteConfig(bits=bits)


def test_every_precision_of_the_table_round_trips_through_plan_json():
    from aa_tflite.precision import PRECISIONS

    plan = Plan({f"s{b}": SiteConfig(clip=1.0, bits=b) for b in PRECISIONS})
    assert Plan.from_json(plan.to_json()) == plan
    assert sorted(PRECISIONS) == [2, 3, 4, 5, 6, 8]
