"""The `mcts-agent` command line."""

from forest_compare import assert_equal_trees
from typer.testing import CliRunner

from mcts_agent.cli import app
from mcts_agent.engine import Forest

runner = CliRunner()


def test_synthetic_search_saves_a_loadable_forest(tmp_path):
    out = tmp_path / "forest.npz"
    result = runner.invoke(app, ["synthetic", "--trees", "3", "--simulations", "40",
                                 "--seed", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "simulations/s" in result.output
    forest = Forest.load(out)
    assert forest.num_trees == 3
    assert forest.nodes.visits[forest.roots].tolist() == [41, 41, 41]


def test_fused_and_stepwise_agree(tmp_path):
    paths = []
    for mode in ("--fused", "--no-fused"):
        paths.append(tmp_path / f"{mode}.npz")
        result = runner.invoke(app, ["synthetic", "--trees", "2", "--simulations", "30",
                                     mode, "--out", str(paths[-1])])
        assert result.exit_code == 0, result.output
    a, b = (Forest.load(p) for p in paths)
    assert_equal_trees(a, b)  # the same trees; fused allocates one tree's nodes together


def test_config_file_and_overrides(tmp_path):
    config = tmp_path / "engine.yaml"
    config.write_text("engine:\n  rule: uct\n  virtual_loss: 2.0\n")
    out = tmp_path / "f.npz"
    result = runner.invoke(app, ["synthetic", "--trees", "1", "--simulations", "10",
                                 "--config", str(config), "--widen-c", "1.0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    config_read = Forest.load(out).config
    assert (config_read.rule, config_read.virtual_loss, config_read.widen_c) == ("uct", 2.0, 1.0)


def test_bad_settings_are_reported_not_raised(tmp_path):
    result = runner.invoke(app, ["synthetic", "--rule", "bogus"])
    assert result.exit_code != 0
    assert "rule" in result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("engine: [1, 2")
    result = runner.invoke(app, ["synthetic", "--config", str(broken)])
    assert result.exit_code != 0
    assert "cannot read" in result.output
