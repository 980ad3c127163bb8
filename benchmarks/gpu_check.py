"""The checks that need a GPU, in one command: torchtitan's trainer on the annealmix
loader, killed and resumed, and the demo's medium preset.

    python benchmarks/gpu_check.py OUT [--steps 300] [--kill-at 150] [--no-demo]

Run it where a CUDA GPU is, in an environment with torchtitan and a CUDA build of
PyTorch (``pip install -e ".[titan]"`` with the machine's own torch). It writes only
under OUT, and its report (``OUT/gpu-check.md``) only once everything has run:

1. ``examples/titan/prepare.py`` writes the data, the mixture config (an anneal from
   code to prose over the middle of the run) and a byte tokenizer;
2. torchtitan's trainer (``python -m torchtitan.train --module examples.titan
   --config llama3_debugmodel_annealmix``, one GPU, deterministic, a checkpoint every
   50 steps) trains ``--steps`` steps once straight through;
3. it trains again, is sent SIGKILL (with every process of the run) once it has
   logged step ``--kill-at``, and is relaunched, resuming from its last checkpoint;
   every step's loss of the resumed run is compared with the straight run's;
4. ``annealmix demo --preset medium --device cuda`` runs the five arms of the demo
   at 25M parameters.

Exit status 0 where the resumed losses equal the straight run's, 1 where they do not.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOSS = re.compile(r"step:\s*(\d+)\s+loss:\s*([-\d.eE+naif]+)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def losses(log: str) -> dict[int, str]:
    """Each step's loss as torchtitan logged it (the last, where a step ran twice)."""
    return {int(s): v for s, v in LOSS.findall(ANSI.sub("", log))}


def trainer(out: Path, data: Path, name: str, steps: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
            "-m", "torchtitan.train", "--module", "examples.titan",
            "--config", "llama3_debugmodel_annealmix", "--training.steps", str(steps),
            "--dump_folder", str(out / name), "--hf_assets_path", str(data / "tokenizer"),
            "--checkpoint.enable", "--checkpoint.interval", "50", "--metrics.log_freq", "1",
            "--debug.deterministic", "--debug.seed", "0"]  # fmt: skip


def run(command: list[str], env: dict, kill_at: int | None = None) -> str:
    """The command's output; with ``kill_at``, SIGKILL to its whole session once it
    has logged that step."""
    job = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    seen = []
    for line in job.stdout:
        seen.append(line)
        print(line, end="", flush=True)
        if kill_at is not None and kill_at in losses(line):
            os.killpg(job.pid, signal.SIGKILL)
            break
    job.wait()
    if kill_at is None and job.returncode:
        raise SystemExit(f"{command[:8]} ... failed with exit status {job.returncode}")
    return "".join(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--kill-at", type=int, default=150)
    parser.add_argument("--no-demo", action="store_true")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: this check runs only where one is")
    out, data = args.out.resolve(), args.out.resolve() / "data"
    subprocess.run([sys.executable, str(ROOT / "examples" / "titan" / "prepare.py"), str(data),
                    "--steps", str(args.steps)], check=True)  # fmt: skip
    env = {**os.environ, "ANNEALMIX_MIX": str(data / "mix.toml"),
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}  # fmt: skip
    straight = losses(run(trainer(out, data, "straight", args.steps), env))
    run(trainer(out, data, "killed", args.steps), env, kill_at=args.kill_at)
    resumed = losses(run(trainer(out, data, "killed", args.steps), env))
    compared = sorted(set(resumed) & set(straight))
    differ = [s for s in compared if resumed[s] != straight[s]]
    lines = [f"# GPU check\n\n{torch.cuda.get_device_name(0)}, torch {torch.__version__}\n",
             f"torchtitan, {args.steps} steps, SIGKILL after step {args.kill_at}: the resumed "
             f"run logged steps {min(resumed)}-{max(resumed)}; {len(compared)} compared with "
             f"the straight run, {len(differ)} differ"
             + (f" (first: step {differ[0]}, {resumed[differ[0]]} against "
                f"{straight[differ[0]]})" if differ else " (every loss equal)") + "\n"]  # fmt: skip
    if not args.no_demo:
        demo = out / "demo"
        subprocess.run([sys.executable, "-m", "annealmix", "demo", "--preset", "medium",
                        "--device", "cuda", "--out", str(demo)], check=True, cwd=ROOT)  # fmt: skip
        lines.append(f"demo, medium preset: its report in {demo}\n")
    (out / "gpu-check.md").write_text("\n".join(lines))
    print("\n".join(lines))
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
