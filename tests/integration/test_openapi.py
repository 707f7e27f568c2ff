"""api/openapi.yaml stays true to the binary: a valid OpenAPI 3.1 document whose operations are
exactly the routes `$MS_BINARY routes <service>` prints for every service in SERVICES, each
operation naming (in its servers) exactly the services that serve it. No server is started."""
import os
import re
import subprocess

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = os.path.join(ROOT, "api", "openapi.yaml")
BINARY = os.path.abspath(os.environ.get("MS_BINARY") or os.path.join(ROOT, "build", "microshop"))
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
JSON_TYPES = {"null", "boolean", "object", "array", "number", "integer", "string"}
# the services whose routes this document describes; a service joins when its issue lands
SERVICES = ("user", "order", "inventory", "payment")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _mapping(loader, node, deep=False):
    keys = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        keys.add(key)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


@pytest.fixture(scope="module")
def doc():
    with open(SPEC, encoding="utf-8") as f:
        return yaml.load(f, Loader=_StrictLoader)


def walk(node, path=()):
    """Yields (path, mapping) for every mapping in the document."""
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from walk(v, path + (str(k),))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, path + (str(i),))


def resolve(doc, ref):
    """The target of a local JSON-pointer $ref; raises KeyError/IndexError when it dangles."""
    assert ref.startswith("#/"), f"only local references are used: {ref}"
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def deref(doc, node):
    seen = set()
    while isinstance(node, dict) and "$ref" in node:
        assert node["$ref"] not in seen, f"reference cycle at {node['$ref']}"
        seen.add(node["$ref"])
        node = resolve(doc, node["$ref"])
    return node


def operations(doc):
    """Yields (METHOD, path, path item, operation)."""
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item, item[method]


def _require_binary():
    if not os.access(BINARY, os.X_OK):
        pytest.fail(f"no microshop binary at {BINARY} (set MS_BINARY)")


def routes_by_service():
    """{service: {(METHOD, path)}}. Routes every process serves (/health, /ready, /metrics)
    appear under each service; the document describes each such path once."""
    _require_binary()
    by_service = {}
    for service in SERVICES:
        out = subprocess.run([BINARY, "routes", service], capture_output=True, text=True,
                             timeout=30, check=False)
        assert out.returncode == 0, f"routes {service}: {out.stderr}"
        routes = set()
        for line in out.stdout.splitlines():
            if line.strip():
                method, path = line.split()
                routes.add((method.upper(), path))
        assert routes, f"the binary printed no routes for {service}"
        by_service[service] = routes
    return by_service


def served_routes():
    """Every route of every service, shared ones once."""
    return set().union(*routes_by_service().values())


def default_urls():
    """{service: its embedded default base URL}, from `$MS_BINARY help <service>` (--listen)."""
    _require_binary()
    urls = {}
    for service in SERVICES:
        out = subprocess.run([BINARY, "help", service], capture_output=True, text=True,
                             timeout=30, check=False)
        text = out.stdout + out.stderr
        m = re.search(r"--listen\b.*?\(default ([^\s()]+:\d+)\)", text)
        assert m, f"help {service} names no --listen default:\n{text}"
        urls[service] = f"http://{m.group(1)}"
    return urls


# ---- (a) a valid 3.1 document whose references all resolve ----

def test_is_openapi_3_1(doc):
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["paths"], "no paths"
    assert doc["servers"][0]["url"] == "http://127.0.0.1:8081"


def test_every_ref_resolves(doc):
    refs = [(p, m["$ref"]) for p, m in walk(doc) if isinstance(m.get("$ref"), str)]
    assert refs, "the document uses no $ref at all"
    dangling = []
    for where, ref in refs:
        try:
            resolve(doc, ref)
        except (KeyError, IndexError, ValueError, TypeError):
            dangling.append(f"{'/'.join(where)}: {ref}")
    assert not dangling, "unresolved $ref:\n" + "\n".join(dangling)


def test_schemas_are_json_schema_2020_12(doc):
    """3.0-isms (nullable, type lists) are easy to slip in; 3.1 is plain JSON Schema."""
    problems = []
    for where, m in walk(doc["components"]["schemas"], ("components", "schemas")):
        if "properties" in where[-1:]:
            continue  # a mapping of property names, not a schema
        if "nullable" in m:
            problems.append(f"{'/'.join(where)}: 'nullable' is OpenAPI 3.0; use type [T, 'null']")
        t = m.get("type")
        types = t if isinstance(t, list) else [t] if t is not None else []
        for ty in types:
            if ty not in JSON_TYPES:
                problems.append(f"{'/'.join(where)}: unknown type {ty!r}")
        if "pattern" in m:
            try:
                re.compile(m["pattern"])
            except re.error as e:
                problems.append(f"{'/'.join(where)}: pattern does not compile: {e}")
    assert not problems, "\n".join(problems)


def test_operations_are_complete(doc):
    problems, ids = [], set()
    schemes = doc["components"]["securitySchemes"]
    for method, path, _, op in operations(doc):
        where = f"{method} {path}"
        oid = op.get("operationId")
        if not oid or oid in ids:
            problems.append(f"{where}: missing or duplicate operationId {oid!r}")
        ids.add(oid)
        if "security" not in op:
            problems.append(f"{where}: say who may call it (security, [] for anyone)")
        for req in op.get("security", []):
            problems += [f"{where}: unknown security scheme {s}" for s in req if s not in schemes]
        responses = op.get("responses") or {}
        if not any(str(code).startswith("2") for code in responses):
            problems.append(f"{where}: no success response")
        for code, resp in responses.items():
            resp = deref(doc, resp)
            if not resp.get("description"):
                problems.append(f"{where} {code}: no description")
            if int(code) >= 400 and "application/problem+json" not in resp.get("content", {}):
                problems.append(f"{where} {code}: errors are application/problem+json")
        if "requestBody" in op and not {"400", "415", "422"} <= set(map(str, responses)):
            problems.append(f"{where}: a JSON body can be 400, 415 and 422")
    assert not problems, "\n".join(problems)


# ---- (b) the document's operations are exactly the routes the binary serves ----

def test_operations_equal_served_routes(doc):
    documented = {(method, path) for method, path, _, _ in operations(doc)}
    served = served_routes()
    missing = sorted(served - documented)
    extra = sorted(documented - served)
    assert not missing and not extra, (
        "api/openapi.yaml and the binary's routes differ\n"
        f"  served but not documented: {missing}\n"
        f"  documented but not served: {extra}")


def test_servers_name_the_services_that_serve_each_operation(doc):
    """Each service's default URL is a top-level server, and an operation's effective servers
    (operation, else path item, else top level) are exactly the services serving its route:
    a shared route lists them all, a service's own route only that service."""
    by_service, urls = routes_by_service(), default_urls()
    top = [s["url"] for s in doc["servers"]]
    problems = [f"no top-level server {url} for the {svc} service"
                for svc, url in urls.items() if url not in top]
    for method, path, item, op in operations(doc):
        servers = op.get("servers", item.get("servers", doc["servers"]))
        have = {s["url"] for s in servers}
        want = {urls[svc] for svc, routes in by_service.items() if (method, path) in routes}
        if want and have != want:
            problems.append(f"{method} {path}: servers {sorted(have)}, served by {sorted(want)}")
    assert not problems, "\n".join(problems)


# ---- (c) every path parameter of a template is declared, and nothing else ----

def test_path_parameters_are_declared(doc):
    problems = []
    for method, path, item, op in operations(doc):
        template = re.findall(r"\{([^{}]+)\}", path)
        if len(template) != len(set(template)):
            problems.append(f"{path}: a parameter appears twice in the template")
        params = {}
        for p in item.get("parameters", []) + op.get("parameters", []):
            p = deref(doc, p)
            params[(p["name"], p["in"])] = p  # operation-level overrides path-level
        declared = {name for (name, where) in params if where == "path"}
        for name in sorted(set(template) - declared):
            problems.append(f"{method} {path}: path parameter {{{name}}} is not declared")
        for name in sorted(declared - set(template)):
            problems.append(f"{method} {path}: declares path parameter {name} not in the path")
        for name in declared:
            p = params[(name, "path")]
            if p.get("required") is not True:
                problems.append(f"{method} {path}: path parameter {name} must be required")
            if "schema" not in p:
                problems.append(f"{method} {path}: path parameter {name} has no schema")
    assert not problems, "\n".join(problems)
