"""Where the host runs, on which plan, and what that plan includes.

A gated setting given a value other than its default on a plan without its feature is
an error, never silently ignored: a restriction an admin believes is on must be on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import notifymail._checks as check
from notifymail._checks import Label, Labeller, Validated
from notifymail._enums import Feature, Hosting, Plan
from notifymail.errors import FeatureNotAvailable

__all__ = ["Deployment", "entitlements", "require_feature"]

_PAID_FEATURES: Final = frozenset(
    {Feature.EMAIL_ALLOW_LIST, Feature.EMAIL_RESTRICT_RECIPIENTS, Feature.ADVANCED_PERMISSIONS}
)
_FEATURE_PLANS: Final = {
    Feature.CLOUD_CUSTOM_SMTP: "Pro or Enterprise on Cloud",
    Feature.EMAIL_ALLOW_LIST: "Pro or Enterprise",
    Feature.EMAIL_RESTRICT_RECIPIENTS: "Pro or Enterprise",
    Feature.ADVANCED_PERMISSIONS: "Pro or Enterprise",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment(Validated):
    """Where the host runs and on which plan; together they decide the features."""

    hosting: Hosting = Hosting.SELF_HOSTED
    """self-hosted, cloud"""
    plan: Plan = Plan.OSS
    """oss (self-hosted only), starter (Cloud only), pro, enterprise"""

    if TYPE_CHECKING:

        def __init__(
            self, *, hosting: Hosting | str = Hosting.SELF_HOSTED, plan: Plan | str = Plan.OSS
        ) -> None: ...

    @classmethod
    def _checked(cls, values: dict[str, Any], label: Labeller) -> dict[str, Any]:
        hosting = check.enum(label("hosting"), Hosting, "a hosting", values["hosting"])
        plan = check.enum(label("plan"), Plan, "a plan", values["plan"])
        if plan is Plan.OSS and hosting is Hosting.CLOUD:
            raise label("plan").error(
                "oss is self-hosted only; Cloud plans are starter, pro, enterprise"
            )
        if plan is Plan.STARTER and hosting is Hosting.SELF_HOSTED:
            raise label("plan").error(
                "starter is Cloud only; self-hosted plans are oss, pro, enterprise"
            )
        return {"hosting": hosting, "plan": plan}

    @property
    def is_cloud(self) -> bool:
        return self.hosting is Hosting.CLOUD


def entitlements(deployment: Deployment) -> frozenset[Feature]:
    """The features a deployment's plan includes.

    Pro and Enterprise have the allow list, restricted suggestions and advanced
    permissions everywhere, and a custom SMTP server on Cloud; OSS and Starter none.
    """
    if deployment.plan not in (Plan.PRO, Plan.ENTERPRISE):
        return frozenset()
    if deployment.is_cloud:
        return _PAID_FEATURES | {Feature.CLOUD_CUSTOM_SMTP}
    return _PAID_FEATURES


def require_feature(deployment: Deployment, feature: Feature, label: Label) -> None:
    """Raise [`FeatureNotAvailable`][notifymail.FeatureNotAvailable] for ``label`` unless
    the plan has ``feature``."""
    if feature not in entitlements(deployment):
        raise FeatureNotAvailable(
            f"{label.name} needs the {feature.value} feature ({_FEATURE_PLANS[feature]}); "
            f"this deployment is {deployment.plan.value}, {deployment.hosting.value}",
            feature=feature,
            field=label.field,
            env_var=label.env_var,
        )
