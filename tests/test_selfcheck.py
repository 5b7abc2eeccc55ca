"""`radiantforge selfcheck`: real jobs with the oracle on the built-in sphere; an unreachable floor fails."""

from radiantforge.cli import main


def test_selfcheck_passes_and_reports_figures(capsys):
    assert main(["selfcheck", "--fast"]) == 0
    out = capsys.readouterr().out
    assert "PASS    texture job (oracle): reference PSNR" in out
    assert "PASS    text-to-3D job (oracle): held-out PSNR" in out and "silhouette IoU" in out
    assert "SKIPPED real diffusion model step" in out


def test_selfcheck_fails_with_non_zero_exit_on_an_impossible_floor(capsys):
    assert main(["selfcheck", "--fast", "--skip-text3d", "--texture-psnr-floor", "200"]) == 1
    assert "FAIL    texture job (oracle)" in capsys.readouterr().out
