"""Factories of Pham's optimizer-selection entries (`optsel-dqn`, `optsel-ppo`)."""

from __future__ import annotations

from service.core.api import ControllerPlan


def optsel(*, space, metric, mode, seed, budget, algo: str, optimizers: str, lr_sgd: float,
           lr_sam: float, lr_adam: float, w_acc: float, w_loss: float, w_time: float,
           w_final: float, step_epochs: int, patience: int, epsilon_decay: float = 0.995,
           learning_starts: int = 32) -> ControllerPlan:
    """Pham's per-epoch optimizer choice: `budget.trials` trials (episodes) of
    `budget.epochs` epochs; the controller sets the optimizer and its own rate."""
    from rllib_policies.optsel._selector import DEFAULT_LR, parse_optimizers

    names = parse_optimizers(optimizers)
    rates = {**DEFAULT_LR, "sgd": lr_sgd, "sam": lr_sam, "adam": lr_adam}
    options = {"algo": algo, "optimizers": optimizers, "lr_sgd": lr_sgd, "lr_sam": lr_sam,
               "lr_adam": lr_adam, "w_acc": w_acc, "w_loss": w_loss, "w_time": w_time,
               "w_final": w_final}
    if algo == "dqn":
        options.update(epsilon_decay=epsilon_decay, learning_starts=learning_starts)
    controls = {"optimizer": {"choice": list(names)},
                "lr": {"choice": sorted({float(rates[n]) for n in names})}}
    return ControllerPlan(
        f"optsel-{algo}", budget.trials, budget.epochs, patience=patience,
        controller="rllib_policies.optsel._selector:OptimizerSelector", controller_options=options,
        step_epochs=step_epochs, controls=controls)


def optsel_dqn(**kwargs) -> ControllerPlan:
    return optsel(algo="dqn", **kwargs)


def optsel_ppo(**kwargs) -> ControllerPlan:
    return optsel(algo="ppo", **kwargs)
