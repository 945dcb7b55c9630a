"""The admin console's package catalog: metrics, packages, the draft editor, publish and archive.

Admins act, support reads: support gets the same pages without any button
that changes something; a forged POST from them reaches the gateway, which
refuses it (403), and the page says so. The editor is one plain form
(``console/catalog_forms.py``): row buttons re-render it, "Save" sends the
whole draft, "Rate" prices one of its charges as typed through the rating
engine (``charges:preview``) without saving anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from console import catalog_forms as cf
from console.gateway import ADMIN, Problem, new_request_id, segment, valid_request_id
from console.pages import FORM_STATUSES, staff_principal
from console.session import CSRF_FIELD, Principal, csrf_ok

if TYPE_CHECKING:
    from console.app import Console

LIST_SIZE = {"pageSize": "500"}  # the catalog is small: one page of each list
ARCHIVED = "PACKAGE_STATE_ARCHIVED"


@dataclass(frozen=True)
class CatalogOp:
    slug: str
    title: str
    button: str
    verb: str  # the gateway route after /packages/{id} or /metrics/{id}
    warning: str


PACKAGE_OPS = {
    op.slug: op
    for op in (
        CatalogOp(
            "publish",
            "Publish package",
            "Publish this draft",
            ":publish",
            "The draft becomes a published version that never changes again; "
            "new subscriptions may pin it.",
        ),
        CatalogOp(
            "archive",
            "Archive package",
            "Archive this package",
            ":archive",
            "No new subscriptions; existing ones keep their version. There is no unarchive.",
        ),
    )
}
METRIC_ARCHIVE = CatalogOp(
    "archive",
    "Archive metric",
    "Archive this metric",
    ":archive",
    "No new package version may use it; versions that already charge it keep rating it.",
)


def routes(console: Console) -> list[BaseRoute]:
    gateway = console.gateway

    async def metrics_of(principal: Principal, rid: str) -> list[dict[str, Any]]:
        listed = await gateway.get(f"{ADMIN}/metrics", principal.token, rid, LIST_SIZE)
        found: list[dict[str, Any]] = listed.get("metrics", [])
        return found

    async def index_page(
        request: Request,
        principal: Principal,
        values: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        problem: Problem | None = None,
        status_code: int = 200,
    ) -> Response:
        rid = console.request_id(request)
        packages = await gateway.get(f"{ADMIN}/packages", principal.token, rid, LIST_SIZE)
        metric_values = values or {}
        return console.render(
            request,
            "catalog/index.html",
            {
                "metrics": await metrics_of(principal, rid),
                "packages": packages.get("packages", []),
                "can_edit": principal.admin,
                "aggregations": cf.AGGREGATIONS,
                "roundings": cf.ROUNDINGS,
                "values": metric_values,
                "errors": errors or {},
                "problem": problem,
                "request_id": metric_values.get("request_id") or new_request_id(),
                "done": request.query_params.get("done", ""),
            },
            status_code=status_code,
        )

    async def index(request: Request) -> Response:
        principal = staff_principal(console, request)
        if isinstance(principal, Response):
            return principal
        return await index_page(request, principal)

    async def create_metric(request: Request) -> Response:
        principal = staff_principal(console, request)
        if isinstance(principal, Response):
            return principal
        form = await request.form()
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return console.render(request, "csrf.html", status_code=403)
        values = {k: str(v).strip() for k, v in form.items()}
        request_id = valid_request_id(values.get("request_id"))
        metric, errors = cf.metric_body(values)
        if errors:
            return await index_page(request, principal, values, errors, status_code=400)
        try:
            await gateway.post(
                f"{ADMIN}/metrics",
                principal.token,
                request_id,
                {"metric": metric, "request_id": request_id},
            )
        except Problem as problem:
            if problem.status != 403 and problem.status not in FORM_STATUSES:
                raise
            return await index_page(
                request, principal, values, problem.violations, problem, problem.status
            )
        return RedirectResponse(
            f"/admin/catalog?done=metric-created&code={segment(metric.get('code', ''))}",
            status_code=303,
        )

    async def load_package(request: Request, principal: Principal) -> dict[str, Any]:
        answer = await gateway.get(
            f"{ADMIN}/packages/{segment(request.path_params['package_id'])}",
            principal.token,
            console.request_id(request),
        )
        found: dict[str, Any] = answer.get("package") or {}
        return found

    async def editor_page(
        request: Request,
        principal: Principal,
        draft: cf.DraftForm,
        package: dict[str, Any] | None,
        *,
        request_id: str | None = None,
        errors: dict[str, str] | None = None,
        problem: Problem | None = None,
        preview: dict[str, Any] | None = None,
        preview_form: dict[str, str] | None = None,
        status_code: int = 200,
    ) -> Response:
        rid = console.request_id(request)
        versions: list[dict[str, Any]] = []
        if package:
            listed = await gateway.get(
                f"{ADMIN}/packages/{segment(package.get('packageId', ''))}/versions",
                principal.token,
                rid,
                LIST_SIZE,
            )
            versions = listed.get("packageVersions", [])
        cf.ready_to_show(draft)
        found = errors or {}
        state = (package or {}).get("state", "")
        return console.render(
            request,
            "catalog/package.html",
            {
                "package": package,
                "versions": versions,
                "draft": draft,
                "metrics": await metrics_of(principal, rid),
                "can_edit": principal.admin and state != ARCHIVED,
                "can_publish": principal.admin
                and state != ARCHIVED
                and bool((package or {}).get("draftVersion")),
                "can_archive": principal.admin and bool(package) and state != ARCHIVED,
                "errors": found,
                "unplaced": cf.unplaced(found, cf.input_names(draft)),
                "problem": problem,
                "preview": preview,
                "preview_form": preview_form or {},
                "request_id": request_id or new_request_id(),
                "models": cf.MODELS,
                "tier_fields": cf.TIER_FIELDS,
                "scalar_fields": cf.SCALAR_FIELDS,
                "intervals": cf.INTERVALS,
                "timings": cf.TIMINGS,
                "enforcements": cf.ENFORCEMENTS,
                "done": request.query_params.get("done", ""),
            },
            status_code=status_code,
        )

    async def new_package(request: Request) -> Response:
        principal = staff_principal(console, request)
        if isinstance(principal, Response):
            return principal
        if request.method == "POST":
            return await edit(request, principal, None)
        return await editor_page(request, principal, cf.DraftForm(), None)

    async def package_page(request: Request) -> Response:
        principal = staff_principal(console, request)
        if isinstance(principal, Response):
            return principal
        package = await load_package(request, principal)
        if request.method == "POST":
            return await edit(request, principal, package)
        # No draft: the editor starts from the published version; saving makes the next draft.
        version = package.get("draftVersion") or package.get("publishedVersion")
        return await editor_page(
            request, principal, cf.from_version(version, package.get("code", "")), package
        )

    async def edit(
        request: Request, principal: Principal, package: dict[str, Any] | None
    ) -> Response:
        form = await request.form()
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return console.render(request, "csrf.html", status_code=403)
        draft = cf.parse_form(form)
        if package:
            draft.code = str(package.get("code", ""))
        request_id = valid_request_id(str(form.get("request_id", "")))
        action = str(form.get("action", "save"))
        if cf.apply_action(draft, action):
            return await editor_page(request, principal, draft, package, request_id=request_id)
        if action == "preview":
            return await preview(request, principal, draft, package, form, request_id)
        body, errors = cf.draft_body(draft)
        if errors:
            return await editor_page(
                request,
                principal,
                draft,
                package,
                request_id=request_id,
                errors=errors,
                status_code=400,
            )
        try:
            if package:
                package_id = str(package.get("packageId", ""))
                await gateway.patch(
                    f"{ADMIN}/packages/{segment(package_id)}",
                    principal.token,
                    request_id,
                    {"draft": body, "request_id": request_id},
                )
            else:
                created = await gateway.post(
                    f"{ADMIN}/packages",
                    principal.token,
                    request_id,
                    {"code": draft.code, "draft": body, "request_id": request_id},
                )
                package_id = str((created.get("package") or {}).get("packageId", ""))
        except Problem as problem:
            if problem.status != 403 and problem.status not in FORM_STATUSES:
                raise
            return await editor_page(
                request,
                principal,
                draft,
                package,
                request_id=request_id,
                errors=problem.violations,
                problem=problem,
                status_code=problem.status,
            )
        return RedirectResponse(
            f"/admin/catalog/packages/{segment(package_id)}?done=saved", status_code=303
        )

    async def preview(
        request: Request,
        principal: Principal,
        draft: cf.DraftForm,
        package: dict[str, Any] | None,
        form: FormData,
        request_id: str,
    ) -> Response:
        asked = {
            k: str(form.get(f"preview.{k}", "")).strip()
            for k in ("charge", "quantity", "event_values")
        }
        index = int(asked["charge"]) if asked["charge"].isdigit() else 0
        if index >= len(draft.charges):
            errors = {"preview.charge": "add a charge to the draft first"}
            return await editor_page(
                request,
                principal,
                draft,
                package,
                request_id=request_id,
                errors=errors,
                preview_form=asked,
                status_code=400,
            )
        charge, errors = cf.charge_body(draft.charges[index], f"{cf.DRAFT}.charges[{index}]")
        body: dict[str, Any] = {"charge": charge, "currency_code": draft.currency_code}
        if asked["quantity"]:
            body["quantity"] = asked["quantity"]
        if events := cf.parse_event_values(asked["event_values"]):
            body["event_values"] = events
        result = None
        problem = None
        if not errors:
            try:
                # Not a mutation: the page's own request id, not the form's.
                result = await gateway.post(
                    f"{ADMIN}/charges:preview", principal.token, console.request_id(request), body
                )
            except Problem as refused:
                if refused.status != 403 and refused.status not in FORM_STATUSES:
                    raise
                problem = refused
                errors = cf.preview_errors(refused.violations, index)
        return await editor_page(
            request,
            principal,
            draft,
            package,
            request_id=request_id,
            errors=errors,
            problem=problem,
            preview=result,
            preview_form=asked,
            status_code=problem.status if problem else (400 if errors else 200),
        )

    def confirm_page(
        request: Request,
        op: CatalogOp,
        kind: str,
        subject: dict[str, Any],
        action: str,
        back: str,
        request_id: str | None = None,
        problem: Problem | None = None,
        status_code: int = 200,
    ) -> Response:
        return console.render(
            request,
            "catalog/confirm.html",
            {
                "op": op,
                "kind": kind,
                "subject": subject,
                "action": action,
                "back": back,
                "problem": problem,
                "request_id": request_id or new_request_id(),
            },
            status_code=status_code,
        )

    async def confirmed(
        request: Request,
        principal: Principal,
        op: CatalogOp,
        path: str,
        page: tuple[str, dict[str, Any], str, str],
        done: str,
    ) -> Response:
        """The confirmed operation's POST: the gateway's refusal stays on the confirmation."""
        form = await request.form()
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return console.render(request, "csrf.html", status_code=403)
        request_id = valid_request_id(str(form.get("request_id", "")))
        try:
            await gateway.post(path, principal.token, request_id, {"request_id": request_id})
        except Problem as problem:
            if problem.status != 403 and problem.status not in FORM_STATUSES:
                raise
            return confirm_page(
                request,
                op,
                *page,
                request_id=request_id,
                problem=problem,
                status_code=problem.status,
            )
        return RedirectResponse(done, status_code=303)

    async def package_op(request: Request) -> Response:
        principal = staff_principal(console, request)
        if isinstance(principal, Response):
            return principal
        op = PACKAGE_OPS.get(request.path_params["operation"])
        if op is None:
            return console.render(request, "not_found.html", status_code=404)
        package = await load_package(request, principal)
        here = f"/admin/catalog/packages/{segment(package.get('packageId', ''))}"
        page = ("package", package, f"{here}/{op.slug}", here)
        if request.method == "GET":
            return confirm_page(request, op, *page)
        path = f"{ADMIN}/packages/{segment(package.get('packageId', ''))}{op.verb}"
        return await confirmed(request, principal, op, path, page, f"{here}?done={op.slug}")

    async def metric_archive(request: Request) -> Response:
        principal = staff_principal(console, request)
        if isinstance(principal, Response):
            return principal
        metric_id = segment(request.path_params["metric_id"])
        answer = await gateway.get(
            f"{ADMIN}/metrics/{metric_id}", principal.token, console.request_id(request)
        )
        metric = answer.get("metric") or {}
        page = ("metric", metric, f"/admin/catalog/metrics/{metric_id}/archive", "/admin/catalog")
        if request.method == "GET":
            return confirm_page(request, METRIC_ARCHIVE, *page)
        path = f"{ADMIN}/metrics/{metric_id}{METRIC_ARCHIVE.verb}"
        return await confirmed(
            request, principal, METRIC_ARCHIVE, path, page, "/admin/catalog?done=metric-archived"
        )

    both = ["GET", "POST"]
    return [
        Route("/admin/catalog", index),
        Route("/admin/catalog/metrics", create_metric, methods=["POST"]),
        Route("/admin/catalog/metrics/{metric_id}/archive", metric_archive, methods=both),
        Route("/admin/catalog/packages/new", new_package, methods=both),
        Route("/admin/catalog/packages/{package_id}", package_page, methods=both),
        Route("/admin/catalog/packages/{package_id}/{operation}", package_op, methods=both),
    ]
