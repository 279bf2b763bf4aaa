"""Generation with the real SmolLM2-135M-Instruct."""
import pytest

from findap_jax import generate


@pytest.mark.slow
def test_smollm2_answers_finance_question_and_batching_is_invariant(smollm2):
    model, tok = smollm2
    prompts = ["What does EBITDA measure?", "Define the price-to-earnings ratio in one sentence."]
    batched = generate(model, tok, prompts, chat=True, max_new_tokens=24)
    assert "earnings" in batched[0].lower()
    assert batched == [generate(model, tok, [p], chat=True, max_new_tokens=24)[0] for p in prompts]
