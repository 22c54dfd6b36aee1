"""How often an answer generated inside a batch differs from the same answer generated alone,
on a real model (greedy).

With fp32 weights a row of the batch is computed as it is alone (tests/test_local_batching.py
checks it token for token). int8 dynamic quantization (``DynamicQuantizeLinear`` before each
``MatMulInteger``) computes one activation scale over the whole input of the step, every row
of the batch together, so a row's numbers depend on what runs beside it, and a greedy answer
can take another token where two were close. This counts how often, on whole answers:

    .venv/bin/python bench/quality_batching_int8.py MODEL_DIR [MODEL_DIR ...] [--questions 24] [--new 64]

each MODEL_DIR a ``lexrag model export`` directory (e.g. SmolLM2-135M-Instruct's GGUF
exported with ``--quantize int8``, and the same with ``--quantize none`` as the control).
Every question is answered alone, then all of them through the scheduler with ``--batch``
seats (one prefill at a time: they join and leave at different steps, as in service). By
default each prompt is prefilled whole, as the service does with prompts of up to
``prefill_whole_tokens``; ``--chunk N`` prefills every prompt in chunks of N tokens while
others decode instead (a chunk's activations are quantized apart from the rest of its prompt).

``--quantize int8-block`` exports (8-bit MatMulNBits: activations quantized per row and
block) on the genai graph give the solo answers in a batch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

QUESTIONS = [
    ("The capital of Zanbaria is Morvik.", "What is the capital of Zanbaria?"),
    (
        "Employees are entitled to 12 days of paid annual leave.",
        "How many days of paid leave do employees get?",
    ),
    ("A person aged 18 or over is an adult.", "At what age does a person become an adult?"),
    ("Normal working hours are at most 8 hours a day and 48 hours a week.", "What is the daily limit?"),
    ("The contract ends when both parties agree in writing.", "How can the contract end?"),
    ("Drivers must keep to the right side of the road.", "Which side of the road do drivers use?"),
    ("The river Olun flows north into the Grey Sea.", "Where does the river Olun flow?"),
    ("Marriage requires the man to be 20 and the woman 18.", "What is the minimum age for a man to marry?"),
    ("A company must register changes within 10 days.", "How long does a company have to register changes?"),
    ("Overtime is paid at 150% of the normal wage.", "How is overtime paid?"),
    ("The museum opens at 9 and closes at 17 every day except Monday.", "When is the museum closed?"),
    ("Tom has three sisters and one brother.", "How many siblings does Tom have?"),
    ("Water boils at 100 degrees Celsius at sea level.", "At what temperature does water boil?"),
    ("The bridge was built in 1889 by a railway company.", "Who built the bridge?"),
    ("The probation period may not exceed 60 days.", "How long can probation last?"),
    ("A will must be signed by two witnesses.", "How many witnesses must sign a will?"),
    ("The fine for speeding is 2 million dong.", "What is the fine for speeding?"),
    ("Parental leave is six months for mothers.", "How long is parental leave for mothers?"),
    ("The library lends up to five books at a time.", "How many books can one borrow?"),
    ("Severance pay is half a month's wage per year worked.", "How is severance pay computed?"),
    ("The meeting is moved from Tuesday to Thursday.", "When is the meeting now?"),
    ("Citizens may vote from the age of 18.", "From what age can citizens vote?"),
    ("The tax return is due on the last day of March.", "When is the tax return due?"),
    ("Each apartment has one parking place.", "How many parking places does an apartment have?"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("model_dirs", type=Path, nargs="+")
    parser.add_argument("--questions", type=int, default=len(QUESTIONS))
    parser.add_argument("--new", type=int, default=64, help="greedy tokens per answer")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--chunk", type=int, default=None, help="prefill every prompt in chunks of N tokens (default: whole)"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    from lexrag_local.engine import Engine
    from lexrag_local.model_files import load_tokenizer
    from lexrag_local.sampling import Sampler, SamplingParams
    from lexrag_local.scheduler import Request, Scheduler
    from lexrag_local.tokens import fast_backend

    greedy = SamplingParams(temperature=0.0)
    for model_dir in args.model_dirs:
        tokenizer = load_tokenizer(model_dir)
        prompts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": f"Context: {context}\nQuestion: {question}"}],
                add_generation_prompt=True,
            )
            for context, question in QUESTIONS[: args.questions]
        ]
        solo_engine = Engine(model_dir)
        eos = frozenset(solo_engine.generation.eos_token_ids)
        started = time.perf_counter()
        alone = []
        for prompt in prompts:
            tokens: list[int] = []
            for token in solo_engine.decode(prompt, args.new, Sampler(greedy)):
                tokens.append(token)
                if token in eos:
                    break
            alone.append(tokens)
        engine = Engine(model_dir, max_batch=args.batch)
        scheduler = Scheduler(
            engine,
            fast_backend(tokenizer),
            prefill_chunk=args.chunk if args.chunk else 0,
            whole_prompt=0 if args.chunk else engine.cache.capacity,
            queue_size=len(prompts),
        )
        requests = [Request(p, args.new, greedy, lambda _: None, eos=eos) for p in prompts]
        for request in requests:
            scheduler.submit(request)
        for request in requests:
            assert request.done.wait(600)
        scheduler.close()
        differ = [
            (
                i,
                next(
                    (k for k, (a, b) in enumerate(zip(r.tokens, s, strict=False)) if a != b),
                    min(len(r.tokens), len(s)),
                ),
            )
            for i, (r, s) in enumerate(zip(requests, alone, strict=True))
            if r.tokens != s
        ]
        ops = _ops(model_dir / "model.onnx")
        kind = "GroupQueryAttention" if "GroupQueryAttention" in ops else "optimum"
        precision = (
            " + ".join(
                name
                for name, present in (
                    (
                        "int8 dynamic (MatMulInteger)",
                        "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops,
                    ),
                    ("n-bit blockwise (MatMulNBits)", "MatMulNBits" in ops),
                )
                if present
            )
            or "float"
        )
        print(
            f"{model_dir} ({kind} graph, {precision}): {len(differ)} of {len(prompts)} answers differ between "
            f"batch ({args.batch} seats, prompts {f'in chunks of {args.chunk}' if args.chunk else 'whole'}) "
            "and alone"
            + (f"; first different token at {sorted(k for _, k in differ)}" if differ else "")
            + f" ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        for i, _ in differ[:3]:
            print(
                f"  #{i} alone: {tokenizer.decode(alone[i])!r}\n  #{i} batch: {tokenizer.decode(requests[i].tokens)!r}"
            )


def _ops(path: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


if __name__ == "__main__":
    main()
