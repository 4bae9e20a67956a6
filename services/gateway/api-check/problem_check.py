"""A check of our own for schemathesis: every error is a problem document.

The document says so for every status it lists, and schemathesis' own checks
hold each answer to that; this check also covers what no operation lists
(405 for a method a path does not have, 404 for a path no route matches),
and the members RFC 9457 and the gateway promise: `type`, `title`,
`status` equal to the HTTP status, a `detail` and a `code`.
"""

import json

import schemathesis

PROBLEM_JSON = "application/problem+json"


def _header(response, name):
    value = response.headers.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return value


@schemathesis.check
def problem_json_on_errors(ctx, response, case):
    status = response.status_code
    if status < 400:
        return None
    content_type = _header(response, "content-type") or ""
    assert content_type.split(";")[0].strip() == PROBLEM_JSON, (
        f"a {status} answer is `{content_type}`, not {PROBLEM_JSON}"
    )
    try:
        problem = json.loads(response.content)
    except ValueError as error:
        raise AssertionError(f"a {status} problem is not JSON: {error}") from None
    assert isinstance(problem, dict), f"a {status} problem is not an object"
    assert problem.get("type") == "about:blank", f"type is {problem.get('type')!r}"
    assert problem.get("status") == status, (
        f"the problem's status {problem.get('status')!r} is not the answer's {status}"
    )
    for member in ("title", "detail", "code"):
        value = problem.get(member)
        assert isinstance(value, str) and value, f"a {status} problem has no {member}"
    return None
