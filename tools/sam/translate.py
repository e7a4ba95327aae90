#!/usr/bin/env python3
"""Translate the SAM template into the CloudFormation that `sam deploy` would hand to AWS.

`sam validate --lint` and `cfn-lint template.yaml` only lint: neither runs the SAM transform, so a
template whose Auth or Events the transform rejects passes both and fails only in the deploy's
change set. This script runs that transform here, with the same library AWS runs it with
(samtranslator), once per environment of samconfig.toml with that environment's
parameter_overrides, and lints the result.

    translate.py                      every environment of samconfig.toml that has
                                      deploy.parameters; writes .aws-sam/translated/<env>.json
    translate.py --template PATH --out PATH [--param K=V ...]
                                      one template (e.g. the packaged one) with the given parameters

Besides the translation it checks what a translated template can show and a deploy would only
reveal late or never:
  * parameter overrides name parameters the template has, and satisfy their AllowedValues,
    AllowedPattern and bounds (CloudFormation rejects them only at deploy time);
  * the local-only environment variables, declared as AWS::NoValue so that `sam local` may set
    them, come out as AWS::NoValue and nothing else, i.e. they are absent from the deployed
    functions;
  * every variable events/env.json sets for a function is declared by that function (SAM local
    silently drops any other).

The transform keeps parameters as Refs (CloudFormation substitutes them at deploy time), so the
environments' translations come out the same unless a parameter reaches something the transform
itself resolves; what differs per environment here is the check of its overrides.

It runs offline and needs no credentials. The translator asks a boto3 session for the region
(to fill AWS::Region and AWS::Partition); it is given one with the region and placeholder keys,
and every socket connection is refused while it runs, so an attempt to reach AWS is an error
rather than a silent dependency.

Exit status: 0 when everything translated, checked and linted cleanly; 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shlex
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Iterator

from boto3.session import Session
from samcli.yamlhelper import yaml_parse
from samtranslator.metrics.metrics import DummyMetricsPublisher, Metrics
from samtranslator.parser.parser import Parser
from samtranslator.public.exceptions import InvalidDocumentException
from samtranslator.translator.translator import Translator

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
PARTITION = "aws"
NO_VALUE = {"Ref": "AWS::NoValue"}

# Settings the local stack gives the functions and a deployed function must never carry: an
# emulator endpoint, and the Daraja secret's fields set without Secrets Manager. Listed here
# rather than read from the template, so that a template which starts giving one of them a
# value fails this check instead of quietly shrinking what it checks.
LOCAL_ONLY = (
    "AWS_ENDPOINT_URL_DYNAMODB",
    "DARAJA_CONSUMER_KEY",
    "DARAJA_CONSUMER_SECRET",
    "DARAJA_PASSKEY",
    "CALLBACK_TOKEN",
)

# The translator refuses local paths (only S3 locations deploy); `sam validate` substitutes a
# placeholder for them in the same way. A packaged template already has s3:// locations and is
# translated as it is.
LOCAL_PATH_PROPERTIES = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
    "AWS::Serverless::Api": "DefinitionUri",
    "AWS::Serverless::HttpApi": "DefinitionUri",
    "AWS::Serverless::StateMachine": "DefinitionUri",
}
PLACEHOLDER_S3_URI = "s3://placeholder-bucket/placeholder-key"


class TranslationError(Exception):
    """The template or its parameters would be refused by the SAM transform or CloudFormation."""


class NetworkAttempt(RuntimeError):
    """Raised in place of any socket connection while the translator runs."""


@contextlib.contextmanager
def no_network() -> Iterator[None]:
    """Refuse every connection and name lookup for the duration.

    The translator is meant to be pure; the one thing that could make it reach out is a managed
    policy name missing from its bundled list (it then asks IAM), or a region/credential lookup.
    Refusing sockets turns any such dependency into a loud error here instead of a hang or an
    AWS call on a machine that happens to have credentials.
    """

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise NetworkAttempt(f"network access attempted during translation: {args[1:] or args}")

    saved = (socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo, socket.create_connection)
    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]
    socket.getaddrinfo = refuse  # type: ignore[assignment]
    socket.create_connection = refuse  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo, socket.create_connection = saved  # type: ignore[method-assign]


def load_template(path: Path) -> dict[str, Any]:
    """YAML with CloudFormation's short tags (!Ref, !If ...) or JSON, as SAM reads it."""
    return yaml_parse(path.read_text(encoding="utf-8"))


def parse_overrides(text: str) -> dict[str, str]:
    """`Key=Value Key2=Value2`, the form of samconfig's parameter_overrides and of --param.

    shlex, because SAM accepts quoted values (Key="a b"); everything up to the first `=` is the key.
    """
    return parse_items(shlex.split(text))


def parse_items(items: list[str]) -> dict[str, str]:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TranslationError(f"parameter override {item!r} is not Key=Value")
        params[key] = value
    return params


def samconfig_environments(path: Path) -> dict[str, dict[str, str]]:
    """Each samconfig environment that deploys, with its parameter overrides."""
    config = tomllib.loads(path.read_text(encoding="utf-8"))
    envs = {}
    for name, commands in config.items():
        if not isinstance(commands, dict):
            continue  # `version = 0.1`
        deploy = commands.get("deploy", {}).get("parameters")
        if deploy is None:
            continue
        envs[name] = parse_overrides(deploy.get("parameter_overrides", ""))
    return envs


def check_parameters(template: dict[str, Any], params: dict[str, str]) -> list[str]:
    """What CloudFormation would refuse about the overrides, found before anything is deployed."""
    declared = template.get("Parameters", {})
    problems = []
    for key, value in params.items():
        spec = declared.get(key)
        if spec is None:
            problems.append(f"parameter {key} is not declared by the template")
            continue
        allowed = spec.get("AllowedValues")
        if allowed is not None and value not in [str(a) for a in allowed]:
            problems.append(f"parameter {key}={value!r} is not one of {allowed}")
        pattern = spec.get("AllowedPattern")
        if pattern is not None and not re.fullmatch(pattern, value):
            problems.append(f"parameter {key}={value!r} does not match AllowedPattern {pattern!r}")
        if spec.get("Type") == "Number":
            try:
                number = float(value)
            except ValueError:
                problems.append(f"parameter {key}={value!r} is not a number")
                continue
            if "MinValue" in spec and number < float(spec["MinValue"]):
                problems.append(f"parameter {key}={value} is below MinValue {spec['MinValue']}")
            if "MaxValue" in spec and number > float(spec["MaxValue"]):
                problems.append(f"parameter {key}={value} is above MaxValue {spec['MaxValue']}")
        if "MinLength" in spec and len(value) < int(spec["MinLength"]):
            problems.append(f"parameter {key} is shorter than MinLength {spec['MinLength']}")
        if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
            problems.append(f"parameter {key} is longer than MaxLength {spec['MaxLength']}")
    return problems


def _replace_local_paths(template: dict[str, Any]) -> None:
    for resource in template.get("Resources", {}).values():
        prop = LOCAL_PATH_PROPERTIES.get(resource.get("Type"))
        properties = resource.get("Properties", {})
        if prop and isinstance(properties.get(prop), str) and not properties[prop].startswith("s3://"):
            properties[prop] = PLACEHOLDER_S3_URI
    function_globals = template.get("Globals", {}).get("Function", {})
    if isinstance(function_globals.get("CodeUri"), str) and not function_globals["CodeUri"].startswith("s3://"):
        function_globals["CodeUri"] = PLACEHOLDER_S3_URI


def translate(template: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
    """The CloudFormation template the SAM transform makes of `template` with `params`.

    Raises TranslationError with the translator's own message when it refuses the template.
    """
    problems = check_parameters(template, params)
    if problems:
        raise TranslationError("; ".join(problems))
    _replace_local_paths(template)

    # The session only answers "which region": placeholder keys keep botocore from ever walking
    # its credential chain (which ends at the instance metadata service, a network call).
    session = Session(region_name=REGION, aws_access_key_id="offline", aws_secret_access_key="offline")
    values = dict(params)
    values.setdefault("AWS::Region", REGION)
    values.setdefault("AWS::Partition", PARTITION)

    def managed_policy_map() -> dict[str, str]:
        # Reached only for a managed policy name the translator does not bundle; the real
        # transform would ask IAM. Better to name the problem than to guess an ARN.
        raise TranslationError(
            "a policy names a managed policy the translator does not know offline; use its ARN"
        )

    # The translator records metrics for AWS's own transform service; here they go nowhere, and
    # publishing them (to the dummy) keeps it from warning about unpublished metrics at exit.
    metrics = Metrics("ServerlessTransform", DummyMetricsPublisher())
    translator = Translator(
        managed_policy_map=None, sam_parser=Parser(), plugins=[], boto_session=session, metrics=metrics
    )
    try:
        with no_network():
            return translator.translate(
                sam_template=template, parameter_values=values, get_managed_policy_map=managed_policy_map
            )
    except InvalidDocumentException as e:
        # The translator's own words, as `sam validate` and the deploy's change set report them:
        # the summary, then each cause.
        raise TranslationError("\n    ".join([e.message] + [cause.message for cause in e.causes])) from e
    finally:
        metrics.publish()


def lambda_functions(translated: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource
        for logical_id, resource in translated.get("Resources", {}).items()
        if resource.get("Type") == "AWS::Lambda::Function"
    }


def function_variables(resource: dict[str, Any]) -> dict[str, Any]:
    return resource.get("Properties", {}).get("Environment", {}).get("Variables", {}) or {}


def check_local_only(translated: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(report lines, problems) for the LOCAL_ONLY variables in a translated template."""
    declared_on: dict[str, list[str]] = {name: [] for name in LOCAL_ONLY}
    valued = set()
    problems = []
    remainder = json.loads(json.dumps(translated))  # what is left once the declarations are taken out
    for logical_id, resource in lambda_functions(remainder).items():
        variables = function_variables(resource)
        for name in LOCAL_ONLY:
            if name not in variables:
                continue
            if variables[name] == NO_VALUE:
                declared_on[name].append(logical_id)
            else:
                valued.add(name)
                problems.append(
                    f"{logical_id} gives the local-only {name} a value ({json.dumps(variables[name])}): "
                    "it would be deployed"
                )
            del variables[name]
    # Anywhere else (a Sub string, another resource, an output) a name would be a value or a
    # reference the check above cannot see.
    text = json.dumps(remainder)
    for name in LOCAL_ONLY:
        if name in text:
            problems.append(f"{name} appears in the translated template outside a function's environment")
    lines = []
    for name, functions in declared_on.items():
        if functions:
            lines.append(f"  {name}: AWS::NoValue on {', '.join(functions)} (absent when deployed)")
        elif name not in valued:
            # A stale list checks nothing; keep it in step with the template.
            problems.append(f"{name} is declared by no function: update LOCAL_ONLY in {Path(__file__).name}")
    return lines, problems


def check_local_env_file(translated: dict[str, Any], env_file: Path) -> list[str]:
    """Variables events/env.json sets that SAM local would drop (the function does not declare them)."""
    if not env_file.is_file():
        return []
    wanted = json.loads(env_file.read_text(encoding="utf-8"))
    functions = lambda_functions(translated)
    problems = []
    for logical_id, variables in wanted.items():
        if logical_id == "Parameters":
            continue  # the file's section for every function
        if logical_id not in functions:
            problems.append(f"{env_file.name} sets variables for {logical_id}, which the template does not have")
            continue
        missing = sorted(set(variables) - set(function_variables(functions[logical_id])))
        if missing:
            problems.append(
                f"{env_file.name}: {logical_id} does not declare {', '.join(missing)}; sam local would drop them"
            )
    return problems


def cfn_lint(paths: list[Path]) -> bool:
    """cfn-lint over translated templates: resource schemas the SAM transform does not check."""
    executable = Path(sys.executable).with_name("cfn-lint")
    command = [str(executable) if executable.exists() else "cfn-lint", *map(str, paths)]
    result = subprocess.run(command)
    return result.returncode == 0


def translate_file(
    template_path: Path, out_path: Path, params: dict[str, str], label: str, env_file: Path | None = None
) -> tuple[dict[str, Any] | None, list[str]]:
    """Translate, write and check one template; (translated or None, problems). Prints as it goes."""
    print(f"{label}: {template_path} with {' '.join(f'{k}={v}' for k, v in params.items()) or 'no overrides'}")
    try:
        translated = translate(load_template(template_path), params)
    except TranslationError as e:
        return None, [f"translation failed: {e}"]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(translated, indent=2) + "\n", encoding="utf-8")
    print(f"  wrote {out_path} ({len(translated.get('Resources', {}))} resources)")
    lines, problems = check_local_only(translated)
    print("\n".join(lines))
    if env_file is not None:
        problems += check_local_env_file(translated, env_file)
    return translated, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", type=Path, help="translate this template instead of every samconfig environment")
    parser.add_argument("--out", type=Path, help="where to write the translation (with --template)")
    parser.add_argument("--param", action="append", default=[], metavar="K=V", help="a parameter override (repeatable)")
    parser.add_argument("--no-lint", action="store_true", help="skip cfn-lint")
    args = parser.parse_args(argv)

    failures: list[str] = []
    written: list[Path] = []
    if args.template:
        if not args.out:
            parser.error("--template needs --out")
        try:
            params = parse_items(args.param)
        except TranslationError as e:
            parser.error(str(e))
        translated, problems = translate_file(args.template, args.out, params, args.template.name)
        failures += [f"{args.template}: {p}" for p in problems]
        if translated is not None:
            written.append(args.out)
    else:
        if args.out or args.param:
            parser.error("--out and --param go with --template")
        template_path = ROOT / "template.yaml"
        for env, params in samconfig_environments(ROOT / "samconfig.toml").items():
            out = ROOT / ".aws-sam" / "translated" / f"{env}.json"
            translated, problems = translate_file(
                template_path, out, params, f"[{env}]", env_file=ROOT / "events" / "env.json"
            )
            failures += [f"[{env}] {p}" for p in problems]
            if translated is not None:
                written.append(out)

    if written and not args.no_lint:
        print(f"cfn-lint {' '.join(str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in written)}")
        if not cfn_lint(written):
            failures.append("cfn-lint reported problems in the translated template(s)")

    sys.stdout.flush()
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    if not failures:
        print("ok: translated, local-only variables absent when deployed, cfn-lint clean")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
