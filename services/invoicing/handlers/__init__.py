"""Use cases of invoicing: each takes an InvoicingUnitOfWork and never commits.

``run_mutation`` (RPCs), the kit consumer (events) or a job (the grace-period
finalizer) opened the unit of work and commits it once.

common.py (shared helpers), billing.py (building invoices), lifecycle.py
(finalize, void, credit memos, payments, profiles).
"""

from services.invoicing.handlers.billing import (
    ImmediateChange,
    build_period_invoice,
    change_plan_now,
    close_period,
    current_period,
    plan_change_invoice,
    preview,
    run_billing,
    subscription_period,
    usage_lines,
)
from services.invoicing.handlers.common import (
    PERCENTAGE_MODELS,
    PlanChangeChecker,
    UsageSource,
    get_invoice,
    line_id,
    new_id,
    plans,
    record_package_version,
    record_subscription,
)
from services.invoicing.handlers.lifecycle import (
    MemoLine,
    add_adjustment,
    credit_balance,
    finalize,
    finalize_due,
    issue_credit_memo,
    mark_uncollectible,
    payment_failed,
    payment_refunded,
    payment_succeeded,
    update_profile,
    void,
)
from services.invoicing.handlers.quotes import PlanChangeQuote, quote_plan_change

__all__ = [
    "PERCENTAGE_MODELS",
    "ImmediateChange",
    "MemoLine",
    "PlanChangeChecker",
    "PlanChangeQuote",
    "UsageSource",
    "add_adjustment",
    "build_period_invoice",
    "change_plan_now",
    "close_period",
    "credit_balance",
    "current_period",
    "finalize",
    "finalize_due",
    "get_invoice",
    "issue_credit_memo",
    "line_id",
    "mark_uncollectible",
    "new_id",
    "payment_failed",
    "payment_refunded",
    "payment_succeeded",
    "plan_change_invoice",
    "plans",
    "preview",
    "quote_plan_change",
    "record_package_version",
    "record_subscription",
    "run_billing",
    "subscription_period",
    "update_profile",
    "usage_lines",
    "void",
]
