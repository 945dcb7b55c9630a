"""``tally rate CHARGE.json USAGE.json``: offline rating from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tally(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write(path: Path, data: object) -> str:
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def test_rate_graduated(tmp_path: Path) -> None:
    charge = write(
        tmp_path / "charge.json",
        {
            "model": "graduated",
            "currency": "USD",
            "tiers": [
                {"up_to": "1000", "unit_amount": "0", "flat_amount": "0"},
                {"up_to": "10000", "unit_amount": "0.004"},
                {"unit_amount": "0.0025", "flat_amount": "1.50"},
            ],
        },
    )
    usage = write(tmp_path / "usage.json", {"quantity": "12345"})
    done = tally("rate", charge, usage)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "amount": "43.36",
        "amount_minor": 4336,
        "currency": "USD",
        "unrounded_amount": "43.3625",
        "details": [
            {
                "description": "tier 1: 0 to 1000",
                "tier": "1",
                "quantity": "1000",
                "unit_amount": "0",
                "flat_amount": "0",
                "amount": "0",
            },
            {
                "description": "tier 2: over 1000 up to 10000",
                "tier": "2",
                "quantity": "9000",
                "unit_amount": "0.004",
                "flat_amount": "0",
                "amount": "36",
            },
            {
                "description": "tier 3: over 10000",
                "tier": "3",
                "quantity": "2345",
                "unit_amount": "0.0025",
                "flat_amount": "1.5",
                "amount": "7.3625",
            },
        ],
    }


def test_rate_percentage_events(tmp_path: Path) -> None:
    charge = write(
        tmp_path / "c.json",
        {"model": "percentage", "currency": "EUR", "rate": "1.4", "fixed_amount": "0.25"},
    )
    usage = write(tmp_path / "u.json", {"events": ["100", "20.00"]})
    done = tally("rate", charge, usage)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["amount"] == "2.18"  # 1.40 + 0.25 + 0.28 + 0.25


def test_rate_bad_charge_file_is_one_error_line(tmp_path: Path) -> None:
    charge = write(
        tmp_path / "charge.json",
        {"model": "volume", "currency": "usd", "tiers": [{"up_to": "5", "unit_amount": 0.1}]},
    )
    usage = write(tmp_path / "usage.json", {"quantity": "1"})
    done = tally("rate", charge, usage)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"tally: error: {charge}: currency: ")
    assert "tiers[0].up_to" in lines[0]
    assert "tiers[0].unit_amount" in lines[0]


def test_rate_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    usage = write(tmp_path / "usage.json", {"quantity": "1"})
    for charge in (str(tmp_path / "broken.json"), str(tmp_path / "missing.json")):
        done = tally("rate", charge, usage)
        assert done.returncode == 1
        assert len(done.stderr.strip().splitlines()) == 1
        assert done.stderr.startswith(f"tally: error: {charge}: ")


def test_rate_usage_kind_mismatch(tmp_path: Path) -> None:
    charge = write(
        tmp_path / "c.json", {"model": "standard", "currency": "JPY", "unit_amount": "3"}
    )
    usage = write(tmp_path / "u.json", {"events": ["1"]})
    done = tally("rate", charge, usage)
    assert done.returncode == 1
    assert done.stderr.startswith(f"tally: error: {usage}: ")
