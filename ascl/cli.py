"""Entry point of the `ascl` command; each package contributes its sub-commands."""

import rule_service.offline  # noqa: F401  (before any import that may reach a model hub)

import typer

from agent.cli import register as register_agent
from rule_service.cli import register as register_rule_service
from trainer.export.cli import register as register_export
from trainer.rewards.cli import register as register_rewards

app = typer.Typer(
    name="ascl",
    help="Adaptive Safe Context Learning: a safety rule service, an agent loop and RL training adapters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
register_rule_service(app)
register_agent(app)
register_export(app)
register_rewards(app)


def _register_eval() -> None:
    from ascl.evaluation.cli import eval_app

    app.add_typer(eval_app, name="eval")


_register_eval()


def main() -> None:
    app()
