"""The sums the engine adds up, and the accuracy and loss derived from them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metrics:
    """Totals over a dataset; accuracy and loss are derived from them."""

    correct: int  # examples whose arg-max logit is the label
    loss_sum: float  # sum of per-example cross-entropy, in nats
    count: int  # examples evaluated

    @property
    def accuracy(self) -> float:
        return self.correct / self.count

    @property
    def error(self) -> float:
        return 1.0 - self.accuracy

    @property
    def loss(self) -> float:
        """Mean cross-entropy, in nats."""
        return self.loss_sum / self.count

    def to_dict(self) -> dict[str, float | int]:
        return {"accuracy": self.accuracy, "loss": self.loss, "num_examples": self.count}
