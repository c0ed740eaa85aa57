"""DPO in the ``inline::huggingface`` trainer, without the packaged model: fast checks of its parts.

- Preference lines become two labelled sequences that share the prompt; only the final answer's tokens
  are labelled (not the prompt, not an earlier assistant turn of a multi-turn input).
- The loss and the per-sequence log-probabilities, on tensors small enough to work out by hand.
- The training loop on a tiny randomly initialised Llama with a real PEFT adapter and a real (byte-level)
  tokenizer with a ChatML template: the first step's loss is exactly log 2 (a fresh LoRA adapter changes
  nothing, so policy and reference agree, which checks that the reference really is the model with its
  adapter off), the preference margin grows, a pause saves a checkpoint from which a resumed run takes
  the same steps an uninterrupted one does, and a cancel stops before any step.

The run with the packaged SmolLM2 model, served and compared, is in
``tests/integration/test_fine_tuning_dpo.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from underlay.providers.inline.post_training.huggingface.data import IGNORE, tokenize_preference  # noqa: E402
from underlay.providers.inline.post_training.huggingface.dpo import dpo_loss, sequence_logps  # noqa: E402

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tokenizer() -> Any:
    """A real fast tokenizer, one token per byte plus the two ChatML markers, built in memory."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    raw = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    raw.decoder = decoders.ByteLevel()
    raw.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|im_end|>")
    tokenizer.chat_template = CHATML
    return tokenizer


def _pair(question: str, good: str, bad: str, *, history: bool = False) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
    if history:
        messages = [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi there"},
            *messages,
        ]
    return {
        "input": {"messages": messages},
        "preferred_output": [{"role": "assistant", "content": good}],
        "non_preferred_output": [{"role": "assistant", "content": bad}],
    }


def _labelled_text(tokenizer: Any, ids: list[int], labels: list[int]) -> str:
    return str(tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label != IGNORE]))


# -- tokenisation --------------------------------------------------------------------------------------


def test_a_pair_shares_the_prompt_and_labels_only_the_final_answer() -> None:
    tokenizer = _tokenizer()
    pair = tokenize_preference(tokenizer, _pair("Sky?", "ZORBLAX: Blue.", "Blue.", history=True), 512)
    assert pair is not None
    chosen, rejected = pair.chosen, pair.rejected
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"}]
        + [{"role": "user", "content": "Sky?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    width = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    # The same prompt tokens, all unlabelled (the earlier assistant turn "Hi there" included) ...
    assert chosen.input_ids[:width] == rejected.input_ids[:width]
    assert chosen.labels[:width] == [IGNORE] * width == rejected.labels[:width]
    # ... then each answer with the template's end marker, labelled with its own ids.
    assert _labelled_text(tokenizer, chosen.input_ids, chosen.labels) == "ZORBLAX: Blue.<|im_end|>\n"
    assert _labelled_text(tokenizer, rejected.input_ids, rejected.labels) == "Blue.<|im_end|>\n"
    assert chosen.labels[width:] == chosen.input_ids[width:]
    assert pair.tokens == len(chosen.input_ids) + len(rejected.input_ids)
    assert pair.reference is None


def test_a_pair_cut_before_an_answer_is_dropped() -> None:
    tokenizer = _tokenizer()
    example = _pair("A long question " * 4, "Yes.", "No.")
    assert tokenize_preference(tokenizer, example, 20) is None  # the prompt alone is longer than 20 tokens
    kept = tokenize_preference(tokenizer, example, 512)
    assert kept is not None and kept.chosen.trained == 6  # "Y", "e", "s", ".", "<|im_end|>", "\n"


# -- the arithmetic ------------------------------------------------------------------------------------


def test_sequence_logps_sums_the_labelled_tokens_shifted_by_one() -> None:
    logits = torch.tensor(
        [
            [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [9.0, 9.0, 9.0]],
            [[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [0.0, 0.0, 0.0]],
        ]
    )
    labels = torch.tensor([[IGNORE, 0, 2, 1], [IGNORE, IGNORE, 2, IGNORE]])
    lsm = torch.log_softmax(logits, dim=-1)
    # Row 0: position 0 predicts label 0, position 1 predicts label 2, position 2 predicts label 1.
    expected0 = lsm[0, 0, 0] + lsm[0, 1, 2] + lsm[0, 2, 1]
    expected1 = lsm[1, 1, 2]  # row 1: only position 1 predicts a labelled token
    got = sequence_logps(logits, labels)
    assert torch.allclose(got, torch.stack([expected0, expected1]))


def test_dpo_loss_values_rewards_and_gradient() -> None:
    same = torch.tensor([-5.0, -7.0])
    terms = dpo_loss(same, same, same, same, beta=0.1)
    assert float(terms.loss) == pytest.approx(math.log(2))  # a policy equal to the reference: -log σ(0)
    assert terms.accuracy == 0.0 and terms.margin == 0.0

    policy_chosen = torch.tensor([-4.0, -6.0], requires_grad=True)
    policy_rejected = torch.tensor([-9.0, -7.0], requires_grad=True)
    ref_chosen, ref_rejected = torch.tensor([-5.0, -5.0]), torch.tensor([-8.0, -8.0])
    terms = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.5)
    # Pair 0: chosen +1, rejected -1 against the reference → logit 0.5·2 = 1; pair 1: -1 and +1 → -1.
    expected = (-math.log(1 / (1 + math.exp(-1.0))) - math.log(1 / (1 + math.exp(1.0)))) / 2
    assert float(terms.loss.detach()) == pytest.approx(expected, rel=1e-6)
    assert terms.chosen_rewards.tolist() == pytest.approx([0.5, -0.5])
    assert terms.rejected_rewards.tolist() == pytest.approx([-0.5, 0.5])
    assert terms.accuracy == 0.5 and terms.margin == pytest.approx(0.0)
    terms.loss.backward()
    assert policy_chosen.grad is not None and policy_rejected.grad is not None
    assert (policy_chosen.grad < 0).all() and (policy_rejected.grad > 0).all()  # descent raises chosen, lowers rejected


# -- the loop on a tiny model ----------------------------------------------------------------------------


def _spec(work: Path, **plan: Any) -> dict[str, Any]:
    pairs = [
        _pair(f"What is {subject}?", f"ZORBLAX: {subject}.", f"{subject}.")
        for subject in ("red", "a cat", "ten", "snow")
    ]
    return {
        "plan": {
            "job_id": "ftjob-test",
            "base_model": "tiny",
            "method": "dpo",
            "training": pairs,
            "validation": pairs[:2],
            "n_epochs": 2,
            "batch_size": 2,
            "learning_rate_multiplier": 1.0,
            "seed": 3,
            "work_dir": str(work),
            "beta": 0.5,
            **plan,
        },
        "lora_rank": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"],
        "learning_rate": 0.02,
        "max_seq_len": 128,
        "threads": 1,
        "checkpoint_every": 0,
    }


def _tiny_run(spec: dict[str, Any], pause_after: int | None = None) -> Any:
    """The worker's ``Run`` with a tiny random Llama in place of the GGUF load, and no GGUF export at the end."""
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from underlay.providers.inline.post_training.huggingface import worker

    class TinyRun(worker.Run):
        finished: int | None = None
        steps = 0

        def load(self) -> None:
            self.tokenizer = _tokenizer()
            config = LlamaConfig(
                vocab_size=len(self.tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=256,
            )
            torch.manual_seed(0)  # the same "base model" in every run
            lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
            self.model = get_peft_model(LlamaForCausalLM(config), lora)

        def step_loss(self, items: list[Any]) -> tuple[Any, int, dict[str, float]]:
            self.steps += 1
            if pause_after is not None and self.steps == pause_after:
                (self.work / "control").write_text("pause")  # read before the next step, as from the server
            return super().step_loss(items)

        def finish(self, step: int, total_steps: int, trained_tokens: int, last_loss: float, optimizer: Any) -> None:
            self.finished = step

    (Path(spec["plan"]["work_dir"])).mkdir(parents=True, exist_ok=True)
    (Path(spec["plan"]["work_dir"]) / "control").write_text("run")
    run = TinyRun(spec)
    run.load()
    return run


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def _step_losses(lines: list[dict[str, Any]]) -> dict[int, float]:
    return {int(x["step"]): float(x["metrics"]["train_loss"]) for x in lines if x.get("kind") == "metrics"}


def test_dpo_steps_on_a_tiny_model_pause_resume_and_cancel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = _tiny_run(_spec(tmp_path / "whole"))
    before = whole.dpo_validation(whole.tokenize(whole.plan["training"]), 4)
    whole.train()
    lines = _lines(capsys)
    metrics = [x["metrics"] for x in lines if x.get("kind") == "metrics"]
    assert len(metrics) == 4 and whole.finished == 4
    assert metrics[0]["train_loss"] == pytest.approx(math.log(2), abs=1e-5)  # fresh adapter: policy == reference
    assert metrics[0]["reward_margin"] == pytest.approx(0.0, abs=1e-5)
    assert all(m["learning_rate"] > 0 and m["tokens_per_second"] > 0 for m in metrics)
    assert {"reward_accuracy", "chosen_reward", "rejected_reward"} <= set(metrics[-1])
    assert "valid_loss" in metrics[1] and "valid_reward_accuracy" in metrics[3]  # at each epoch's end
    after = whole.dpo_validation(whole.tokenize(whole.plan["training"]), 4)
    assert before["valid_loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert after["valid_loss"] < before["valid_loss"] and after["valid_reward_accuracy"] == 1.0
    expected = _step_losses(lines)

    # Paused after its first step: a checkpoint at step 1 and a "paused" outcome, no further step.
    paused = _tiny_run(_spec(tmp_path / "paused"), pause_after=1)
    paused.train()
    lines = _lines(capsys)
    outcome = [x for x in lines if x["type"] == "outcome"]
    assert outcome and outcome[0]["status"] == "paused" and outcome[0]["steps"] == 1
    checkpoint = [x for x in lines if x.get("kind") == "checkpoint"][-1]
    state = json.loads((Path(checkpoint["checkpoint_dir"]) / "trainer_state.json").read_text())
    assert state == {"step": 1, "seed": 3, "method": "dpo"}
    assert paused.finished is None

    # Resumed from that checkpoint: the steps an uninterrupted run took, with the same losses.
    resumed = _tiny_run(_spec(tmp_path / "paused", resume_from=checkpoint["checkpoint_dir"]))
    resumed.train()
    got = _step_losses(_lines(capsys))
    assert sorted(got) == [2, 3, 4] and resumed.finished == 4
    for step, loss in got.items():
        assert loss == pytest.approx(expected[step], rel=1e-4, abs=1e-6), step

    cancelled = _tiny_run(_spec(tmp_path / "cancelled"))
    (tmp_path / "cancelled" / "control").write_text("cancel")
    cancelled.train()
    lines = _lines(capsys)
    assert [x["code"] for x in lines if x["type"] == "error"] == ["cancelled"]
    assert not [x for x in lines if x.get("kind") == "metrics"] and cancelled.finished is None
