"""The nftables text of a loss rule (no root needed): both directions, port narrowing, bounds."""

from __future__ import annotations

import pytest

from testbeds.netns import ImpairmentError, LossRule
from testbeds.netns.cleanup import table_name


def test_random_loss_rule_covers_both_directions_of_one_interface() -> None:
    text = LossRule("p1", 1).ruleset("dpuemu_1_2")
    assert text.startswith("table inet dpuemu_1_2 {")
    assert 'iifname "p1" numgen random mod 100 < 1 counter drop' in text
    assert 'oifname "p1" numgen random mod 100 < 1 counter drop' in text
    assert "type filter hook input" in text and "type filter hook output" in text


def test_port_rule_matches_requests_in_and_answers_out() -> None:
    text = LossRule("lo", 5, tcp_port=4420).ruleset("t")
    assert 'iifname "lo" tcp dport 4420 numgen random mod 100 < 5 counter drop' in text
    assert 'oifname "lo" tcp sport 4420 numgen random mod 100 < 5 counter drop' in text


def test_full_loss_drops_everything_without_numgen() -> None:
    text = LossRule("p2", 100).ruleset("t")
    assert "numgen" not in text and 'iifname "p2" counter drop' in text


@pytest.mark.parametrize("percent", [0, -1, 101])
def test_percent_out_of_range_is_refused(percent: int) -> None:
    with pytest.raises(ImpairmentError):
        LossRule("p1", percent).ruleset("t")


def test_table_names_carry_the_run_id_without_dashes() -> None:
    assert table_name("123-4") == "dpuemu_123_4"
