"""`serve --api-cpus`: the CPU list format and the split between the API and the workers."""

from __future__ import annotations

import pytest

from server.core.cpus import format_cpu_list, parse_cpu_list, workers_cpus


@pytest.mark.parametrize(("text", "cpus"), [("0", {0}), ("0-2,5", {0, 1, 2, 5}), (" 3 , 1-1 ", {1, 3}),
                                            ("0,0-1", {0, 1})])
def test_cpu_lists_read_as_the_kernel_writes_them(text, cpus):
    assert parse_cpu_list(text) == cpus
    assert parse_cpu_list(format_cpu_list(cpus)) == cpus


@pytest.mark.parametrize(("text", "message"), [("a", "'a' is not a CPU number"), ("3-1", "runs backwards"),
                                               (",", "names no CPU"), ("1-", "'1-' is not"), ("-1", "'-1' is not")])
def test_a_bad_cpu_list_is_refused_with_a_sentence(text, message):
    with pytest.raises(ValueError, match=message):
        parse_cpu_list(text)


def test_format_joins_runs():
    assert format_cpu_list({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert format_cpu_list(set()) == ""


def test_the_workers_get_the_cpus_the_api_does_not_use():
    assert workers_cpus({0}, {0, 1, 2, 3}, workers=2) == {1, 2, 3}
    assert workers_cpus({0, 1}, {0, 1}, workers=0) == set()  # an API-only node may take them all


def test_a_split_that_cannot_be_is_refused():
    with pytest.raises(ValueError, match="CPU 9 is not available to this process \\(available: 0-3\\)"):
        workers_cpus({0, 9}, {0, 1, 2, 3}, workers=1)
    with pytest.raises(ValueError, match="leaves no CPU for the workers"):
        workers_cpus({0, 1}, {0, 1}, workers=1)
