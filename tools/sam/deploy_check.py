#!/usr/bin/env python3
"""Deploy the built application with the SAM CLI into moto, and check what was created.

The real `sam package` and `sam deploy` run against a moto server on loopback, so the deploy path
the README describes (sam build, package, deploy) is exercised end to end without an AWS account:

  1. start `moto_server` on a free loopback port;
  2. `sam package` the built template (`.aws-sam/build/template.yaml`, from `sam build`) into a
     bucket in moto: the functions' code is zipped and uploaded as for a real deploy;
  3. translate the packaged template with translate.py: moto's CloudFormation does not run the
     SAM transform, so it gets the CloudFormation the transform would have made;
  4. `sam deploy` that template as a stack, once per samconfig environment (`default`, `prod`),
     with that environment's parameter overrides (Architecture excepted: the build's);
  5. read every resource back from moto with boto3 and compare it with the translated template.

Step 5 is needed because moto's CloudFormation is lenient: it skips resource types it does not
implement (HTTP APIs, Secrets Manager secrets, alarms, EventInvokeConfig), drops references to
them without error, ignores some properties, reports CREATE_COMPLETE regardless, and fills no
Outputs after a change set. So a CREATE_COMPLETE proves little; each resource is checked against
the template instead, and whatever moto cannot show is listed at the end as not covered, named
from the translated template rather than from a fixed list.

    deploy_check.py [--build-dir .aws-sam/build]   after `sam build`
    deploy_check.py --fake-build                   with stand-in bootstraps (checks the template and
                                                   the deploy path, not the functions' code)

Nothing leaves the machine: the SAM CLI and boto3 get placeholder credentials, an empty AWS config,
endpoints on loopback, and a proxy on a closed loopback port for anything else (SAM CLI's own
version check included), so a request that would have gone to AWS fails instead.

Exit status: 0 when every check passed; 1 otherwise.
"""

from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
import translate  # noqa: E402  (the sibling script; shared so both translate the same way)
from botocore.exceptions import ClientError  # noqa: E402

ROOT = translate.ROOT
REGION = translate.REGION
VENV_BIN = Path(sys.executable).parent
BUCKET = "mpesa-express-check-artifacts"
STACK_NAMES = {"default": "mpesa-express-check", "prod": "mpesa-express-check-prod"}
# The Architecture parameter is the build's, not samconfig's (arm64): `make sam-build` builds for
# x86_64, and deploying that as arm64 would declare functions their code cannot run on. Read from
# the bootstraps when they are real executables; x86_64 for a stand-in build.
FALLBACK_ARCHITECTURE = "x86_64"
MOTO_START_DEADLINE_S = 20.0
NOVALUE = object()  # a value CloudFormation leaves out (Ref AWS::NoValue)


# ---------------------------------------------------------------------------------------------
# Environment and processes


def free_loopback_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hermetic_environment(work: Path, dead_proxy: str) -> dict[str, str]:
    """The environment for this process and its children: nothing in it can reach real AWS.

    Every AWS_* variable is dropped (profiles, session tokens, role ARNs, web identity files,
    endpoint overrides, CA bundles), the config and credential files point at empty files, and
    the instance metadata service is off, so placeholder keys are the only credentials to be had.
    Proxying everything but loopback to a closed port turns any request to a real endpoint into
    an immediate local failure.
    """
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("AWS_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"))}
    (work / "aws-config").write_text("")
    (work / "aws-credentials").write_text("")
    # SAM CLI's app dir (its metadata.json): a private one, marked as having just checked PyPI for
    # a newer version, so the weekly check is not even attempted (the proxy would stop it anyway)
    # and the user's own ~/.aws-sam is left alone. The variable is SAM CLI's internal override.
    sam_dir = work / "sam-cli-app"
    sam_dir.mkdir()
    (sam_dir / "metadata.json").write_text(json.dumps({"lastVersionCheck": time.time(), "telemetryEnabled": False}))
    env.update({
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": str(work / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(work / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "SAM_CLI_TELEMETRY": "0",
        "__SAM_CLI_APP_DIR": str(sam_dir),
        # SAM polls stack events every 5 s by default; moto answers at once.
        "SAM_CLI_POLL_DELAY": "0.5",
        "HTTP_PROXY": dead_proxy,
        "HTTPS_PROXY": dead_proxy,
        "http_proxy": dead_proxy,
        "https_proxy": dead_proxy,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    })
    return env


@contextmanager
def moto_server(env: dict[str, str], log_path: Path) -> Iterator[int]:
    """A moto server on a free loopback port, up and answering; stopped on the way out."""
    port = free_loopback_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    try:
        # No proxy for the health probe, whatever the environment says.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + MOTO_START_DEADLINE_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                with opener.open(f"http://127.0.0.1:{port}/moto-api/", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server not answering on port {port} after {MOTO_START_DEADLINE_S} s")
                time.sleep(0.05)  # a poll interval, not a wait for readiness
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(command: list[str], env: dict[str, str], cwd: Path) -> None:
    """Run a SAM CLI command; on failure show what it said and stop."""
    result = subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        sys.stdout.write(result.stdout)
        raise RuntimeError(f"{' '.join(command[:2])} exited with {result.returncode}")


def elf_architecture(binary: bytes) -> str | None:
    """Lambda's name for the CPU an ELF executable is for (e_machine), None if not ELF."""
    if binary[:4] != b"\x7fELF" or len(binary) < 20:
        return None
    machine = int.from_bytes(binary[18:20], "little" if binary[5] == 1 else "big")
    return {0x3E: "x86_64", 0xB7: "arm64"}.get(machine, f"e_machine {machine:#x}")


def build_architecture(build_dir: Path, build_template: dict[str, Any]) -> str | None:
    """The architecture the build's bootstraps are for, if they are real (and agree)."""
    found = set()
    for resource in build_template.get("Resources", {}).values():
        code = resource.get("Properties", {}).get("CodeUri")
        if resource.get("Type") == "AWS::Serverless::Function" and isinstance(code, str):
            path = build_dir / code / "bootstrap"
            if path.is_file():
                with open(path, "rb") as f:
                    found.add(elf_architecture(f.read(20)))
    return found.pop() if len(found) == 1 else None


def make_fake_build(build_dir: Path) -> None:
    """What `sam build` leaves, without compiling: the template with each function's CodeUri
    pointing at its own directory (Metadata gone) and a bootstrap in it. Each bootstrap differs,
    so the check can tell one function's code from another's."""
    template = translate.load_template(ROOT / "template.yaml")
    build_dir.mkdir(parents=True)
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        resource.pop("Metadata", None)
        resource["Properties"]["CodeUri"] = logical_id
        (build_dir / logical_id).mkdir()
        bootstrap = build_dir / logical_id / "bootstrap"
        bootstrap.write_text(f"#!/bin/sh\n# stand-in for {logical_id}: not a build\nexit 1\n")
        bootstrap.chmod(0o755)
    from samcli.yamlhelper import yaml_dump

    (build_dir / "template.yaml").write_text(yaml_dump(template))


# ---------------------------------------------------------------------------------------------
# Evaluating the translated template's intrinsics against what moto created


class Skipped(Exception):
    """A value depends on a resource moto did not create."""

    def __init__(self, logical_id: str, resource_type: str):
        super().__init__(logical_id)
        self.logical_id = logical_id
        self.resource_type = resource_type

    def __str__(self) -> str:
        return f"{self.logical_id} ({self.resource_type})"


class Unsupported(Exception):
    """An intrinsic this check cannot evaluate: better to fail than to stop checking quietly."""


class Resolver:
    """Evaluates Ref, GetAtt, Sub, If, Join, Select and conditions the way CloudFormation would,
    with the physical names and ARNs moto gave the stack's resources."""

    def __init__(self, template: dict[str, Any], params: dict[str, str], stack: str, physical: dict[str, str], aws: "Aws"):
        self.resources = template["Resources"]
        self.condition_defs = template.get("Conditions", {})
        self.params = params
        self.stack = stack
        self.physical = physical
        self.aws = aws
        self._conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            self._conditions[name] = self._truth(self.condition_defs[name])
        return self._conditions[name]

    def _truth(self, node: Any) -> bool:
        (fn, arg), = node.items()
        if fn == "Fn::Equals":
            return str(self.value(arg[0])) == str(self.value(arg[1]))
        if fn == "Fn::Not":
            return not self._truth(arg[0])
        if fn == "Fn::And":
            return all(self._truth(a) for a in arg)
        if fn == "Fn::Or":
            return any(self._truth(a) for a in arg)
        if fn == "Condition":
            return self.condition(arg)
        raise Unsupported(f"condition function {fn}")

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": REGION,
            "AWS::Partition": translate.PARTITION,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": self.stack,
        }
        if name == "AWS::NoValue":
            return NOVALUE
        if name in pseudo:
            return pseudo[name]
        if name == "AWS::AccountId":
            return self.aws.account_id()
        if name in self.params:
            return self.params[name]
        if name in self.resources:
            if name not in self.physical:
                raise Skipped(name, self.resources[name]["Type"])
            return self.physical[name]
        raise Unsupported(f"Ref {name}")

    def attribute(self, logical_id: str, attr: str) -> str:
        if logical_id not in self.physical:
            raise Skipped(logical_id, self.resources[logical_id]["Type"])
        kind = self.resources[logical_id]["Type"]
        getter = self.aws.attribute_getters().get((kind, attr))
        if getter is None:
            raise Unsupported(f"GetAtt {kind}.{attr}")
        return getter(self.physical[logical_id])

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.value(n) for n in node) if v is not NOVALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical_id, attr = arg.split(".", 1) if isinstance(arg, str) else arg
                return self.attribute(logical_id, attr)
            if key == "Fn::If":
                return self.value(arg[1] if self.condition(arg[0]) else arg[2])
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else arg
                return self._sub(text, variables)
            if key == "Fn::Join":
                return arg[0].join(str(v) for v in self.value(arg[1]))
            if key == "Fn::Select":
                return self.value(arg[1])[int(self.value(arg[0]))]
            if key.startswith("Fn::"):
                raise Unsupported(key)
        return {k: v for k, v in ((k, self.value(v)) for k, v in node.items()) if v is not NOVALUE}

    def _sub(self, text: str, variables: dict[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            inner = match.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in variables:
                return str(self.value(variables[inner]))
            head, _, attr = inner.partition(".")
            if attr and head in self.resources:
                return str(self.attribute(head, attr))
            return str(self.ref(inner))

        return re.sub(r"\$\{([^}]+)\}", one, text)


class Aws:
    """boto3 clients on moto, with the few lookups the checks share."""

    def __init__(self, endpoint: str):
        import boto3

        session = boto3.session.Session(region_name=REGION)
        self._client: Callable[[str], Any] = lambda service: session.client(service, endpoint_url=endpoint)
        self.s3 = self._client("s3")
        self.cfn = self._client("cloudformation")
        self.ddb = self._client("dynamodb")
        self.lam = self._client("lambda")
        self.iam = self._client("iam")
        self.events = self._client("events")
        self.logs = self._client("logs")
        self.sqs = self._client("sqs")
        self._account: str | None = None

    def account_id(self) -> str:
        if self._account is None:
            self._account = self._client("sts").get_caller_identity()["Account"]
        return self._account

    def attribute_getters(self) -> dict[tuple[str, str], Callable[[str], str]]:
        return {
            ("AWS::DynamoDB::Table", "Arn"): lambda n: self.ddb.describe_table(TableName=n)["Table"]["TableArn"],
            ("AWS::IAM::Role", "Arn"): lambda n: self.iam.get_role(RoleName=n)["Role"]["Arn"],
            ("AWS::Lambda::Function", "Arn"): lambda n: self.lam.get_function(FunctionName=n)["Configuration"]["FunctionArn"],
            ("AWS::Events::Rule", "Arn"): lambda n: self.events.describe_rule(Name=n)["Arn"],
            ("AWS::DynamoDB::Table", "StreamArn"): lambda n: self.ddb.describe_table(TableName=n)["Table"]["LatestStreamArn"],
            ("AWS::Events::EventBus", "Arn"): lambda n: self.events.describe_event_bus(Name=n)["Arn"],
            # A queue's physical id is its URL.
            ("AWS::SQS::Queue", "Arn"): lambda n: self.sqs.get_queue_attributes(QueueUrl=n, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"],
            ("AWS::SQS::Queue", "QueueName"): lambda n: n.rstrip("/").rsplit("/", 1)[-1],
        }


# ---------------------------------------------------------------------------------------------
# Checks


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[bool, str, str, str, str]] = []
        self.gaps: dict[str, list[str]] = {}

    def row(self, ok: bool, stack: str, subject: str, what: str, detail: str = "") -> None:
        self.rows.append((ok, stack, subject, what, detail))

    def expect(self, stack: str, subject: str, what: str, expected: Any, actual: Any, shown: str | None = None) -> bool:
        ok = expected == actual
        detail = (shown if shown is not None else short(actual)) if ok else f"template {short(expected)}, moto {short(actual)}"
        self.row(ok, stack, subject, what, detail)
        return ok

    def gap(self, stack: str, text: str) -> None:
        stacks = self.gaps.setdefault(text, [])
        if stack not in stacks:
            stacks.append(stack)

    @property
    def failed(self) -> int:
        return sum(1 for row in self.rows if not row[0])

    def print(self) -> None:
        if not self.rows:
            return
        widths = [max(len(r[i]) for r in self.rows) for i in (1, 2, 3)]
        print(f"{'':4}  {'stack':<{widths[0]}}  {'resource':<{widths[1]}}  {'check':<{widths[2]}}  detail")
        for ok, stack, subject, what, detail in self.rows:
            print(f"{'ok' if ok else 'FAIL':<4}  {stack:<{widths[0]}}  {subject:<{widths[1]}}  {what:<{widths[2]}}  {detail}")


def short(value: Any, limit: int = 90) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def policy_document(doc: Any) -> dict[str, Any]:
    """moto hands inline policy documents back as a dict, JSON, or (after a CloudFormation create)
    the Python repr of a dict; real IAM returns URL-decoded JSON. Accept all three."""
    if isinstance(doc, dict):
        return doc
    try:
        return json.loads(doc)
    except ValueError:
        return ast.literal_eval(doc)


def canonical_statement(statement: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """A statement with single values made lists and lists sorted, so order and form do not count."""
    out: dict[str, Any] = {}
    for key in keys:
        if key not in statement:
            continue
        value = statement[key]
        if key == "Principal" and isinstance(value, dict):
            value = {k: sorted(as_list(v)) for k, v in value.items()}
        elif key in ("Action", "NotAction", "Resource", "NotResource"):
            value = sorted(as_list(value))
        out[key] = value
    return out


STATEMENT_KEYS = ("Sid", "Effect", "Principal", "Action", "NotAction", "Resource", "NotResource", "Condition")


class StackCheck:
    """Checks one deployed stack against the template it was deployed from."""

    HANDLED = {
        "AWS::DynamoDB::Table": {
            "KeySchema", "AttributeDefinitions", "BillingMode", "GlobalSecondaryIndexes",
            "LocalSecondaryIndexes", "TimeToLiveSpecification", "PointInTimeRecoverySpecification",
            "SSESpecification",
        },
        "AWS::Lambda::Function": {
            "Code", "Runtime", "Handler", "MemorySize", "Timeout", "Description", "Architectures", "Role",
            "Environment", "ReservedConcurrentExecutions", "LoggingConfig", "Tags",
        },
        "AWS::IAM::Role": {"AssumeRolePolicyDocument", "Policies", "ManagedPolicyArns", "Tags"},
        "AWS::Events::Rule": {"ScheduleExpression", "State", "Description", "EventPattern", "Targets"},
        "AWS::Lambda::Permission": {"Action", "FunctionName", "Principal", "SourceArn"},
        "AWS::Logs::LogGroup": {"LogGroupName", "RetentionInDays"},
    }

    def __init__(self, report: Report, aws: Aws, label: str, stack: str, template: dict[str, Any],
                 params: dict[str, str], overrides: set[str], build_dir: Path, build_template: dict[str, Any]):
        self.report = report
        self.overrides = overrides
        self.aws = aws
        self.label = label
        self.stack = stack
        self.template = template
        self.params = params
        self.build_dir = build_dir
        self.build_template = build_template
        self.resolver: Resolver

    # One row / one gap, labelled with this stack.
    def expect(self, subject: str, what: str, expected: Any, actual: Any, shown: str | None = None) -> bool:
        return self.report.expect(self.label, subject, what, expected, actual, shown)

    def row(self, ok: bool, subject: str, what: str, detail: str = "") -> None:
        self.report.row(ok, self.label, subject, what, detail)

    def gap(self, text: str) -> None:
        self.report.gap(self.label, text)

    def run(self) -> None:
        cfn = self.aws.cfn
        stack = cfn.describe_stacks(StackName=self.stack)["Stacks"][0]
        self.expect(self.stack, "stack status", "CREATE_COMPLETE", stack["StackStatus"])
        deployed_params = {p["ParameterKey"]: p["ParameterValue"] for p in stack.get("Parameters", [])}
        self.expect(self.stack, "parameters as deployed", self.params, deployed_params,
                    shown=" ".join(f"{k}={v}" for k, v in self.params.items() if k in self.overrides))
        summaries = cfn.list_stack_resources(StackName=self.stack)["StackResourceSummaries"]
        # moto lists the resources it skipped with an empty logical id: only named ones exist.
        present = {s["LogicalResourceId"]: s for s in summaries if s.get("LogicalResourceId")}
        failed = [k for k, s in present.items() if not s["ResourceStatus"].endswith("_COMPLETE")]
        self.row(not failed, self.stack, "resource statuses", f"not complete: {', '.join(failed)}" if failed else f"{len(present)} *_COMPLETE")
        physical = {k: s.get("PhysicalResourceId", "") for k, s in present.items()}
        self.resolver = Resolver(self.template, self.params, self.stack, physical, self.aws)

        outputs = self.template.get("Outputs", {})
        if outputs and not stack.get("Outputs"):
            self.gap(f"Outputs ({', '.join(outputs)}): moto fills none after a change set")
        elif outputs:
            self.check_outputs(outputs, {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]})

        skipped: dict[str, list[str]] = {}
        unchecked: dict[str, list[str]] = {}
        checkers = {
            "AWS::DynamoDB::Table": self.check_table,
            "AWS::Lambda::Function": self.check_function,
            "AWS::IAM::Role": self.check_role,
            "AWS::Events::Rule": self.check_rule,
            "AWS::Lambda::Permission": self.check_permission,
            "AWS::Logs::LogGroup": self.check_log_group,
        }
        for logical_id, resource in sorted(self.template["Resources"].items(), key=lambda kv: (kv[1]["Type"], kv[0])):
            kind = resource["Type"]
            condition = resource.get("Condition")
            if condition and not self.resolver.condition(condition):
                self.expect(logical_id, f"absent (condition {condition} false)", False, logical_id in present)
                continue
            checker = checkers.get(kind)
            if checker is None:
                (unchecked if logical_id in present else skipped).setdefault(kind, []).append(logical_id)
                continue
            if not self.expect(logical_id, "created", True, logical_id in present, shown=physical.get(logical_id) or "yes"):
                continue
            try:
                checker(logical_id, resource["Properties"])
            except Unsupported as e:
                self.row(False, logical_id, "evaluate template", f"deploy_check cannot evaluate {e}: extend Resolver")
            except Skipped as e:
                self.row(False, logical_id, "evaluate template", f"a checked property refers to {e}, which moto skipped")
            except ClientError as e:
                # Listed by the stack but not to be found (or not answerable): a failure of this
                # resource, and the others are still worth checking.
                self.row(False, logical_id, "read back from moto", short(str(e), 160))
            for prop in sorted(set(resource["Properties"]) - self.HANDLED[kind]):
                self.gap(f"{kind} {prop}: in the template, not inspected by this check")
            for attribute in ("DeletionPolicy", "UpdateReplacePolicy"):
                if attribute in resource:
                    self.gap(f"{logical_id} {attribute} {resource[attribute]}: not exercised (no stack is deleted or replaced)")
        for kind, ids in sorted(skipped.items()):
            self.gap(f"{kind} x{len(ids)} ({', '.join(ids)}): moto's CloudFormation skips this type without error")
        for kind, ids in sorted(unchecked.items()):
            self.gap(f"{kind} x{len(ids)} ({', '.join(ids)}): created by moto, not inspected by this check")

    def check_outputs(self, outputs: dict[str, Any], actual: dict[str, str]) -> None:
        for key, output in outputs.items():
            try:
                expected = self.resolver.value(output["Value"])
            except Skipped as e:
                self.gap(f"Output {key}: refers to {e}, skipped by moto")
                continue
            self.expect(self.stack, f"output {key}", expected, actual.get(key))

    # -- DynamoDB ------------------------------------------------------------------------------

    def check_table(self, logical_id: str, props: dict[str, Any]) -> None:
        props = self.resolver.value(props)
        name = self.resolver.physical[logical_id]
        table = self.aws.ddb.describe_table(TableName=name)["Table"]
        keys = lambda schema: [(k["AttributeName"], k["KeyType"]) for k in schema]  # noqa: E731
        self.expect(logical_id, "key schema", keys(props["KeySchema"]), keys(table["KeySchema"]),
                    shown=", ".join(f"{a} {t}" for a, t in keys(table["KeySchema"])))
        attrs = lambda defs: sorted((d["AttributeName"], d["AttributeType"]) for d in defs)  # noqa: E731
        self.expect(logical_id, "attribute definitions", attrs(props["AttributeDefinitions"]),
                    attrs(table["AttributeDefinitions"]), shown=", ".join(a for a, _ in attrs(table["AttributeDefinitions"])))
        self.expect(logical_id, "billing mode", props.get("BillingMode", "PROVISIONED"),
                    table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED"))
        for kind, field in (("GSI", "GlobalSecondaryIndexes"), ("LSI", "LocalSecondaryIndexes")):
            expected = {i["IndexName"]: i for i in props.get(field, [])}
            actual = {i["IndexName"]: i for i in table.get(field, [])}
            self.expect(logical_id, f"{kind} names", sorted(expected), sorted(actual), shown=", ".join(sorted(actual)) or "none")
            for index, spec in expected.items():
                if index not in actual:
                    continue
                got = actual[index]
                projection = lambda p: (p.get("ProjectionType"), sorted(p.get("NonKeyAttributes", [])))  # noqa: E731
                self.expect(logical_id, f"{kind} {index}", (keys(spec["KeySchema"]), projection(spec["Projection"])),
                            (keys(got["KeySchema"]), projection(got["Projection"])),
                            shown=", ".join(f"{a} {t}" for a, t in keys(got["KeySchema"])) + f"; {got['Projection']['ProjectionType']}")

        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            described = self.aws.ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            if described.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
                self.expect(logical_id, "TTL attribute", ttl["AttributeName"], described.get("AttributeName"))
            else:
                self.gap(f"{logical_id} TimeToLiveSpecification ({ttl['AttributeName']}): moto's CloudFormation does not apply it (DescribeTimeToLive: {described.get('TimeToLiveStatus')})")
        pitr = props.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled")
        if pitr is not None:
            status = self.aws.ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"] \
                .get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus")
            if status == "ENABLED" or not pitr:
                self.expect(logical_id, "point-in-time recovery", "ENABLED" if pitr else "DISABLED", status)
            else:
                self.gap(f"{logical_id} PointInTimeRecoverySpecification: moto's CloudFormation does not apply it (status {status})")
        sse = props.get("SSESpecification", {}).get("SSEEnabled")
        if sse is not None:
            if "SSEDescription" in table:
                self.expect(logical_id, "server-side encryption", "ENABLED" if sse else "DISABLED", table["SSEDescription"].get("Status"))
            else:
                self.gap(f"{logical_id} SSESpecification: moto reads the API's Enabled, not CloudFormation's SSEEnabled, and reports none")

    # -- Lambda --------------------------------------------------------------------------------

    def check_function(self, logical_id: str, props: dict[str, Any]) -> None:
        name = self.resolver.physical[logical_id]
        answer = self.aws.lam.get_function(FunctionName=name)
        conf = answer["Configuration"]
        value = self.resolver.value
        for prop, what in (("Runtime", "runtime"), ("Handler", "handler"), ("MemorySize", "memory (MB)"),
                           ("Timeout", "timeout (s)"), ("Description", "description")):
            if prop in props:
                self.expect(logical_id, what, value(props[prop]), conf.get(prop))
        declared = value(props.get("Architectures", ["x86_64"]))
        reported = conf.get("Architectures")
        if reported == declared and declared != ["x86_64"]:
            self.row(True, logical_id, "architectures", short(reported))
        elif reported == ["x86_64"]:
            # moto 5.2's CloudFormation passes no Architectures to Lambda, which then reports its
            # default; a match on x86_64 would prove nothing. The bootstrap check below ties the
            # declared architecture to the build instead.
            self.gap("AWS::Lambda::Function Architectures: moto's CloudFormation ignores it (reports x86_64 whatever"
                     " the template says); checked against the bootstraps' ELF type instead")
        else:
            self.expect(logical_id, "architectures", declared, reported)
        role = props["Role"]
        self.expect(logical_id, "role", value(role), conf.get("Role"), shown=short(conf.get("Role", "")).rsplit("/", 1)[-1])
        if "ReservedConcurrentExecutions" in props:
            reserved = self.aws.lam.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions")
            self.expect(logical_id, "reserved concurrency", int(value(props["ReservedConcurrentExecutions"])), reserved)
        self.check_environment(logical_id, props.get("Environment", {}).get("Variables", {}),
                               conf.get("Environment", {}).get("Variables", {}))
        self.check_code(logical_id, value(props["Code"]), conf, declared)
        if "LoggingConfig" in props:
            logging_config = value(props["LoggingConfig"])
            if "LoggingConfig" in conf:
                self.expect(logical_id, "logging config", logging_config, conf["LoggingConfig"])
            else:
                self.gap("AWS::Lambda::Function LoggingConfig (JSON logs, log levels, the log group written to): moto"
                         " does not keep it; only that the group it names exists is checked")
            if "LogGroup" in logging_config:
                group = logging_config["LogGroup"]
                found = self.log_group(group) is not None
                self.row(found, logical_id, "LoggingConfig log group exists", group if found else f"moto has no log group {group}")
        if props.get("Tags"):
            tags = self.aws.lam.list_tags(Resource=conf["FunctionArn"]).get("Tags", {})
            if tags:
                self.expect(logical_id, "tags", {t["Key"]: t["Value"] for t in value(props["Tags"])}, tags)
            else:
                self.gap("AWS::Lambda::Function Tags: moto's CloudFormation does not apply them")

    def check_environment(self, logical_id: str, declared: dict[str, Any], actual: dict[str, Any]) -> None:
        absent = []
        for var, node in declared.items():
            try:
                expected = self.resolver.value(node)
            except Skipped as e:
                self.gap(f"{logical_id} {var}: refers to {e}, which moto skipped; moto leaves the variable out")
                continue
            if expected is NOVALUE:
                absent.append(var)
                continue
            # moto keeps a Number parameter as a number; Lambda holds every value as a string.
            got = actual.get(var)
            self.expect(logical_id, f"env {var}", str(expected), None if got is None else str(got), shown=f"= {short(str(got), 60)}")
        if absent:
            present = [v for v in absent if v in actual]
            self.row(not present, logical_id, "env local-only absent",
                     f"present: {', '.join(present)}" if present else ", ".join(absent))
        extra = sorted(set(actual) - set(declared))
        self.row(not extra, logical_id, "env nothing undeclared", f"undeclared: {', '.join(extra)}" if extra else f"{len(actual)} variables")

    def check_code(self, logical_id: str, code: dict[str, Any], conf: dict[str, Any], architectures: list[str]) -> None:
        """The function runs the packaged object, and that object holds this function's build."""
        bucket, key = code.get("S3Bucket"), code.get("S3Key")
        self.expect(logical_id, "code bucket", BUCKET, bucket, shown=f"s3://{bucket}/{key}")
        if bucket != BUCKET:
            return
        # moto reports its own Location for the code, not the bucket it came from; the digest ties
        # the function to the object.
        blob = self.aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        digest = base64.b64encode(hashlib.sha256(blob).digest()).decode()
        self.expect(logical_id, "code is the packaged zip", digest, conf.get("CodeSha256"), shown=f"sha256 {digest[:16]}...")
        built = self.build_template["Resources"].get(logical_id, {}).get("Properties", {}).get("CodeUri")
        if not isinstance(built, str):
            self.row(False, logical_id, "code is this function's build", f"no CodeUri for it in {self.build_dir}/template.yaml")
            return
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            inside = z.read("bootstrap") if "bootstrap" in z.namelist() else None
        expected = (self.build_dir / built / "bootstrap").read_bytes()
        self.row(inside == expected, logical_id, "code is this function's build",
                 f"bootstrap = {built}/bootstrap ({len(expected)} bytes)" if inside == expected
                 else f"the zip's bootstrap differs from {self.build_dir}/{built}/bootstrap")
        machine = elf_architecture(expected)
        if machine is None:
            self.gap("the bootstrap's CPU architecture: the build's bootstraps are not ELF executables (a stand-in build?)")
        else:
            self.row([machine] == architectures, logical_id, "bootstrap is for its architecture",
                     f"ELF {machine}" if [machine] == architectures
                     else f"the template declares {', '.join(architectures)}, the bootstrap is ELF {machine}")

    def check_permission(self, logical_id: str, props: dict[str, Any]) -> None:
        value = self.resolver.value
        function = value(props["FunctionName"])
        principal, action = value(props["Principal"]), value(props["Action"])
        policy = json.loads(self.aws.lam.get_policy(FunctionName=function)["Policy"])
        candidates = [
            s for s in policy.get("Statement", [])
            if s.get("Action") == action and principal in as_list(s.get("Principal", {}).get("Service"))
        ]
        self.row(bool(candidates), logical_id, f"{action} by {principal}", f"on {function}" if candidates else f"no such statement on {function}")
        if "SourceArn" not in props or not candidates:
            return
        try:
            source = value(props["SourceArn"])
        except Skipped as e:
            seen = candidates[0].get("Condition", {}).get("ArnLike", {}).get("AWS:SourceArn")
            self.gap(f"{logical_id} SourceArn: refers to {e}, skipped by moto (moto holds {seen!r})")
            return
        arns = [s.get("Condition", {}).get("ArnLike", {}).get("AWS:SourceArn") for s in candidates]
        self.row(source in arns, logical_id, "source ARN", short(source) if source in arns else f"template {source}, moto {arns}")

    # -- CloudWatch Logs -----------------------------------------------------------------------

    def log_group(self, name: str) -> dict[str, Any] | None:
        groups = self.aws.logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
        return next((g for g in groups if g["logGroupName"] == name), None)

    def check_log_group(self, logical_id: str, props: dict[str, Any]) -> None:
        props = self.resolver.value(props)
        name = self.resolver.physical[logical_id]
        if "LogGroupName" in props:
            self.expect(logical_id, "name", props["LogGroupName"], name)
        group = self.log_group(name)
        if not self.expect(logical_id, "in CloudWatch Logs", True, group is not None, shown=name):
            return
        # Absent: the events never expire. Compared as numbers: a Number parameter's value may come
        # as a string.
        expected, got = props.get("RetentionInDays"), group.get("retentionInDays")
        self.expect(logical_id, "retention (days)", None if expected is None else int(expected),
                    None if got is None else int(got), shown="never expires" if got is None else None)

    # -- IAM -----------------------------------------------------------------------------------

    def check_role(self, logical_id: str, props: dict[str, Any]) -> None:
        name = self.resolver.physical[logical_id]
        role = self.aws.iam.get_role(RoleName=name)["Role"]
        trust = lambda doc: [canonical_statement(s, STATEMENT_KEYS) for s in policy_document(doc)["Statement"]]  # noqa: E731
        self.expect(logical_id, "trust policy", trust(self.resolver.value(props["AssumeRolePolicyDocument"])),
                    trust(role["AssumeRolePolicyDocument"]), shown="sts:AssumeRole by lambda.amazonaws.com"
                    if "lambda.amazonaws.com" in json.dumps(role["AssumeRolePolicyDocument"]) else None)
        policies = {p["PolicyName"]: p["PolicyDocument"] for p in props.get("Policies", [])}
        actual_names = self.aws.iam.list_role_policies(RoleName=name)["PolicyNames"]
        self.expect(logical_id, "inline policy names", sorted(policies), sorted(actual_names), shown=", ".join(actual_names))
        for policy_name, document in policies.items():
            if policy_name in actual_names:
                held = policy_document(self.aws.iam.get_role_policy(RoleName=name, PolicyName=policy_name)["PolicyDocument"])
                self.check_statements(logical_id, policy_name, document["Statement"], held.get("Statement", []))
        managed = props.get("ManagedPolicyArns", [])
        attached = [p["PolicyArn"] for p in self.aws.iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]]
        if managed and not attached:
            self.gap(f"AWS::IAM::Role ManagedPolicyArns ({', '.join(p.rsplit('/', 1)[-1] for p in managed)}): moto's CloudFormation does not attach them")
        else:
            self.expect(logical_id, "managed policies", sorted(self.resolver.value(managed)), sorted(attached))
        if props.get("Tags") and not role.get("Tags"):
            self.gap("AWS::IAM::Role Tags: moto's CloudFormation does not apply them")

    def check_statements(self, logical_id: str, policy_name: str, template_statements: list[Any], held: list[Any]) -> None:
        """Statement by statement, in order: effect, actions and the resolved resources."""
        if not self.expect(logical_id, f"{policy_name} statement count", len(template_statements), len(held)):
            return
        for i, (statement, got) in enumerate(zip(template_statements, held), 1):
            keys: tuple[str, ...] = STATEMENT_KEYS
            try:
                expected = self.resolver.value(statement)
            except Skipped as e:
                # Compare what survives; the Resource depends on something moto did not create.
                actions = ", ".join(as_list(statement.get("Action")))
                self.gap(f"{logical_id} statement {actions}: Resource refers to {e}, skipped by moto; moto keeps the statement without a Resource")
                keys = tuple(k for k in STATEMENT_KEYS if k not in ("Resource", "NotResource"))
                expected = self.resolver.value({k: v for k, v in statement.items() if k in keys})
            want, have = canonical_statement(expected, keys), canonical_statement(got, keys)
            self.expect(logical_id, f"{policy_name} statement {i}", want, have,
                        shown=f"{want.get('Effect')} {', '.join(want.get('Action', []))}"
                        + (f" on {', '.join(r.split(':', 5)[-1] for r in want['Resource'])}" if "Resource" in want else ""))

    # -- EventBridge ---------------------------------------------------------------------------

    def check_rule(self, logical_id: str, props: dict[str, Any]) -> None:
        props = self.resolver.value(props)
        name = self.resolver.physical[logical_id]
        rule = self.aws.events.describe_rule(Name=name)
        for prop, what in (("ScheduleExpression", "schedule"), ("EventPattern", "event pattern"), ("Description", "description")):
            if prop in props:
                self.expect(logical_id, what, props[prop], rule.get(prop))
        self.expect(logical_id, "state", props.get("State", "ENABLED"), rule.get("State"))
        targets = {t["Id"]: t for t in self.aws.events.list_targets_by_rule(Rule=name)["Targets"]}
        for target in props.get("Targets", []):
            got = targets.get(target["Id"], {})
            self.expect(logical_id, f"target {target['Id']}", target["Arn"], got.get("Arn"),
                        shown=short(got.get("Arn", "")).rsplit(":", 1)[-1])
            for extra in sorted(set(target) - {"Id", "Arn"}):
                self.expect(logical_id, f"target {target['Id']} {extra}", target[extra], got.get(extra))
        self.expect(logical_id, "target count", len(props.get("Targets", [])), len(targets))


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build-dir", type=Path, default=ROOT / ".aws-sam" / "build",
                        help="output of `sam build` (default: .aws-sam/build)")
    parser.add_argument("--fake-build", action="store_true",
                        help="make a stand-in build (dummy bootstraps) instead of using --build-dir")
    parser.add_argument("--architecture", choices=["x86_64", "arm64"],
                        help="Architecture parameter to deploy with (default: what the build's bootstraps are for)")
    parser.add_argument("--env", action="append", choices=sorted(STACK_NAMES),
                        help="samconfig environment(s) to deploy (default: all)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the work files (packaged and translated templates, moto's log) in DIR")
    args = parser.parse_args(argv)

    started = time.monotonic()
    timings: list[tuple[str, float]] = []

    @contextmanager
    def step(name: str) -> Iterator[None]:
        t0 = time.monotonic()
        print(f"==> {name}", flush=True)
        yield
        timings.append((name, time.monotonic() - t0))

    environments = translate.samconfig_environments(ROOT / "samconfig.toml")
    wanted = args.env or [e for e in STACK_NAMES if e in environments]
    report = Report()
    work = Path(tempfile.mkdtemp(prefix="deploy-check-"))
    try:
        if args.fake_build:
            build_dir = work / "build"
            make_fake_build(build_dir)
            print(f"stand-in build (dummy bootstraps) in {build_dir}")
        else:
            build_dir = args.build_dir.resolve()
        if not (build_dir / "template.yaml").is_file():
            print(f"FAIL no {build_dir}/template.yaml: run `sam build` first (or pass --fake-build)", file=sys.stderr)
            return 1
        build_template = translate.load_template(build_dir / "template.yaml")
        architecture = args.architecture or build_architecture(build_dir, build_template) or FALLBACK_ARCHITECTURE

        # A bound socket that never listens: the proxy address for everything not on loopback.
        with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as dead:
            dead.bind(("127.0.0.1", 0))
            env = hermetic_environment(work, f"http://127.0.0.1:{dead.getsockname()[1]}")
            os.environ.clear()
            os.environ.update(env)  # the same for boto3 in this process as for the children
            # An explicit, nearly empty config: samconfig.toml's deploy settings (confirm_changeset
            # would wait for a keypress, resolve_s3 clashes with --s3-bucket and would create a
            # managed-bucket stack) must not apply, wherever the template being deployed lives.
            config = work / "samconfig.toml"
            config.write_text("version = 0.1\n")
            sam = str(VENV_BIN / "sam")

            t0 = time.monotonic()
            with moto_server(env, work / "moto.log") as port:
                timings.append(("moto_server up", time.monotonic() - t0))
                # `localhost`, not 127.0.0.1: sam deploy hands CloudFormation the uploaded template
                # as a URL on this endpoint, and moto reads a dotted host as a virtual-hosted
                # bucket ("127"), failing with NoSuchBucket; a dotless host leaves the bucket in
                # the path. The server itself listens on 127.0.0.1 only.
                endpoint = f"http://localhost:{port}"
                aws = Aws(endpoint)
                aws.s3.create_bucket(Bucket=BUCKET)

                with step("sam package"):
                    packaged = work / "packaged.yaml"
                    run([sam, "package", "--template-file", str(build_dir / "template.yaml"), "--s3-bucket", BUCKET,
                         "--output-template-file", str(packaged), "--region", REGION, "--config-file", str(config)],
                        {**env, "AWS_ENDPOINT_URL_S3": endpoint}, cwd=work)

                for env_name in wanted:
                    stack = STACK_NAMES[env_name]
                    overrides = {**environments[env_name], "Architecture": architecture}
                    with step(f"[{env_name}] translate packaged template"):
                        translated, problems = translate.translate_file(
                            packaged, work / f"{env_name}.json", overrides, f"[{env_name}]")
                    for problem in problems:
                        report.row(False, env_name, "translate.py", "translation", problem)
                    if translated is None:
                        continue
                    with step(f"[{env_name}] sam deploy {stack}"):
                        run([sam, "deploy", "--template-file", str(work / f"{env_name}.json"), "--stack-name", stack,
                             "--capabilities", "CAPABILITY_IAM", "--no-confirm-changeset", "--no-fail-on-empty-changeset",
                             "--s3-bucket", BUCKET, "--region", REGION, "--config-file", str(config),
                             "--parameter-overrides", *[f"{k}={v}" for k, v in overrides.items()]],
                            {**env, "AWS_ENDPOINT_URL": endpoint}, cwd=work)
                    with step(f"[{env_name}] check {stack}"):
                        params = {k: str(overrides.get(k, spec.get("Default", "")))
                                  for k, spec in translated.get("Parameters", {}).items()}
                        StackCheck(report, aws, env_name, stack, translated, params, set(overrides),
                                   build_dir, build_template).run()
    except Exception as e:  # a step that could not run is a failure of the check, with its reason
        report.row(False, "-", "-", "run", f"{type(e).__name__}: {e}")
    finally:
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)

    print()
    report.print()
    print("\nNot covered here (moto skips or ignores it, or nothing exercises it; translate.py and cfn-lint"
          " see it only in the template):")
    for text, stacks in report.gaps.items():
        print(f"  - {text}" + ("" if len(stacks) == len(wanted) else f"  [{', '.join(stacks)}]"))
    print("\nTimings: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings)
          + f"; total {time.monotonic() - started:.1f} s")
    checks = len(report.rows)
    if report.failed:
        print(f"FAIL: {report.failed} of {checks} checks failed", file=sys.stderr)
        return 1
    print(f"ok: {checks} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
