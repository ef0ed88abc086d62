"""What the README says, held to what is true: its benchmark section is the latest bench run's."""

from __future__ import annotations

from bench.__main__ import BEGIN, END, README, RESULTS, readme_block


def test_readme_benchmark_section_is_the_latest_bench_run():
    text = README.read_text()
    section = text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip()
    assert section == readme_block((RESULTS / "results.md").read_text()), "run `make bench` to regenerate it"
