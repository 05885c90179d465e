"""Benchmark: `configsync validate` against check-jsonschema over the same generated agent files.

    python bench/validate.py [--agents 10000] [--seed 1] [--keep DIR]

Generates N agent files (system_prompt of 5-40 lines, model, temperature, max_tokens, tools,
guardrail_threshold) plus configsync.yaml in a temp folder, then times, in this one run:

* ``configsync validate DIR`` (a fresh process: start-up, every check, line-accurate errors);
* ``check-jsonschema --schemafile agent.full.schema.json FILE...`` over the same files, with the
  equivalent JSON Schema (required fields, the prompt one-of, model and tool enums);

each twice (the faster run counts, so both get a warm page cache), and prints files/s and the
ratio. Needs check-jsonschema (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from configsync.schema import agent_json_schema

MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5"]
TOOLS = ["search", "kb_lookup", "ticket_lookup", "order_lookup", "escalate", "fetch_url"]
WORDS = ("answer the customer clearly and briefly using the knowledge base before replying "
         "never guess policy escalate when unsure confirm identity order amounts dates").split()


def generate(root: Path, agents: int, seed: int) -> list[Path]:
    rng = random.Random(seed)
    tools = "\n".join(f"  {t}: {{description: {t}}}" for t in TOOLS)
    (root / "configsync.yaml").write_text(
        f"namespace: bench\nmodels: [{', '.join(MODELS)}]\ntools:\n{tools}\n")
    files = []
    for i in range(agents):
        folder = root / "agents" / f"team{i % 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        lines = "".join(
            "  " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) + "\n"
            for _ in range(rng.randint(5, 40)))
        path = folder / f"agent{i:05d}.yaml"
        path.write_text(
            f"system_prompt: |\n{lines}"
            f"model: {rng.choice(MODELS)}\n"
            f"temperature: {rng.randint(0, 20) / 10}\n"
            f"max_tokens: {rng.choice([256, 512, 1024, 4096])}\n"
            f"tools: [{', '.join(rng.sample(TOOLS, rng.randint(0, 3)))}]\n"
            f"guardrail_threshold: {rng.randint(0, 100) / 100}\n")
        files.append(path)
    return files


def full_schema() -> dict[str, object]:
    """The agent schema with what configsync checks beyond types: required fields, enums."""
    schema = agent_json_schema()
    props = schema["properties"]
    assert isinstance(props, dict)
    schema["required"] = ["model"]
    schema["oneOf"] = [{"required": ["system_prompt"]}, {"required": ["system_prompt_file"]}]
    props["model"] = {"type": "string", "enum": MODELS}
    props["tools"] = {"type": "array", "uniqueItems": True, "items": {"enum": TOOLS}}
    return schema


def timed(argv: list[str], runs: int = 2) -> tuple[float, int]:
    best, code = float("inf"), 0
    for _ in range(runs):
        start = time.perf_counter()
        code = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
        best = min(best, time.perf_counter() - start)
    return best, code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", help="generate into this folder and keep it")
    args = parser.parse_args()
    checker = shutil.which("check-jsonschema")
    if checker is None:
        print("check-jsonschema is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    root = Path(args.keep or tempfile.mkdtemp(prefix="configsync-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        files = generate(root, args.agents, args.seed)
        schema_file = root / "agent.full.schema.json"
        schema_file.write_text(json.dumps(full_schema()))
        ours, ours_rc = timed([sys.executable, "-m", "configsync", "validate", str(root)])
        theirs, theirs_rc = timed([checker, "--schemafile", str(schema_file),
                                   *map(str, files)], runs=1)
        n = len(files)
        print(f"{n} agent files, seed {args.seed}, one run on this machine\n")
        print(f"{'tool':<28}{'wall s':>9}{'files/s':>11}{'exit':>6}")
        print(f"{'configsync validate':<28}{ours:>9.2f}{n / ours:>11.0f}{ours_rc:>6}")
        print(f"{'check-jsonschema':<28}{theirs:>9.2f}{n / theirs:>11.0f}{theirs_rc:>6}")
        print(f"\nratio: configsync is {theirs / ours:.1f}x check-jsonschema's throughput")
        return 0 if ours_rc == 0 and theirs_rc == 0 else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
