"""The [mpps_policy.<AE>] tables of wlmd.conf, and the MPPS options."""

from __future__ import annotations

from pathlib import Path

import pytest

from wlmd.config.commandline import parse_command_line
from wlmd.config.file import ConfigError, dump_config, load_config
from wlmd.config.settings import Settings
from wlmd.mpps.policy import (
    AePolicy,
    CompletedAction,
    Destination,
    DiscontinuedAction,
    InProgressAction,
    MppsPolicies,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wlmd.conf"
    path.write_text(text)
    return path


def test_tables_set_a_default_and_per_ae_policies(tmp_path: Path) -> None:
    values = load_config(write(tmp_path, (
        'mpps = true\nmpps_path = "/srv/mpps"\n'
        '[mpps_policy."*"]\ncompleted = "archive"\ncompleted_delay = 60\n'
        '[mpps_policy.CT01]\nin_progress = "hide"\ndiscontinued = "reschedule"\n'
        'forward = [{ ae_title = "RIS", host = "192.0.2.1", port = 104, tls = true }]\n')))
    policies = values["mpps_policy"]
    assert isinstance(policies, MppsPolicies)
    assert policies.for_ae("MR01") == AePolicy(completed=CompletedAction.ARCHIVE,
                                               completed_delay=60.0)
    ct = policies.for_ae("CT01")
    assert ct.in_progress is InProgressAction.HIDE
    assert ct.discontinued is DiscontinuedAction.RESCHEDULE
    assert ct.completed is CompletedAction.MARK  # the "*" table does not cascade into CT01
    assert ct.forward == (Destination("RIS", "192.0.2.1", 104, tls=True),)
    assert policies.destinations() == ct.forward


@pytest.mark.parametrize(("text", "message"), [
    ('[mpps_policy.CT01]\ncompleted = "shred"\n', "completed: expected one of"),
    ('[mpps_policy.CT01]\nbogus = 1\n', "unknown key 'bogus'"),
    ('[mpps_policy.CT01]\ncompleted_delay = -1\n', "completed_delay"),
    ('[mpps_policy.CT01]\nforward = [{ ae_title = "RIS", host = "h", port = 0 }]\n', "port"),
    ('[mpps_policy."../x"]\n', "not a usable AE title"),
])
def test_bad_policies_are_refused_with_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(write(tmp_path, text))
    assert ":1: mpps_policy" in str(caught.value)


def test_policies_round_trip_through_the_config_file(tmp_path: Path) -> None:
    policies = MppsPolicies(
        AePolicy(completed=CompletedAction.DELETE, completed_delay=5.0),
        (("CT01", AePolicy(InProgressAction.HIDE, forward=(
            Destination("RIS", "::1", 11112, tls=True, tls_ca_file=Path("/ca.pem")),))),))
    settings = Settings(port=104, mpps=True, mpps_path=Path("/srv/mpps"), mpps_policy=policies)
    values = {"port": 104, "mpps": True, "mpps_path": Path("/srv/mpps"),
              "mpps_policy": policies}
    assert Settings(**load_config(write(tmp_path, dump_config(values)))) == settings  # type: ignore[arg-type]


def test_mpps_is_off_unless_asked_for() -> None:
    assert parse_command_line(["104"]).settings.mpps is False
    parsed = parse_command_line(["--mpps", "--mpps-path", "/srv/mpps", "104"])
    assert parsed.settings.mpps is True
    assert parsed.settings.mpps_path == Path("/srv/mpps")
