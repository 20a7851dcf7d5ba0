"""Length-sorted batches under a token budget (padding cost is what a batch really spends)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["token_budget_batches"]


def token_budget_batches(lengths: Sequence[int], budget: int, max_batch: int = 1024) -> list[list[int]]:
    """Group indices, longest first, so that ``len(batch) * longest_in_batch <= budget``.

    A text longer than the budget still gets a batch of its own.

    >>> token_budget_batches([5, 100, 20, 30], budget=100)
    [[1], [3, 2, 0]]
    >>> token_budget_batches([], budget=10)
    []
    """
    if budget <= 0:
        raise ValueError(f"token budget is {budget}, expected a positive number of tokens")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and ((len(current) + 1) * longest > budget or len(current) >= max_batch):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
