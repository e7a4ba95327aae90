use super::*;

#[test]
fn the_readme_section_is_all_known_commands() {
    let root = dynamo::workspace_root().expect("workspace");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let commands = readme_commands(&readme, "### `sam local`").unwrap();
    let steps: Vec<Step> = commands.iter().map(|c| parse_step(c).unwrap()).collect();
    let invoked: BTreeSet<String> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Invoke { event, .. } => Some(event.clone()),
            _ => None,
        })
        .collect();
    let files: BTreeSet<String> = events::event_files(&events::events_dir(&root))
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(invoked, files, "every event is invoked by the README, once");
}

#[test]
fn comments_are_stripped_outside_quotes_only() {
    assert_eq!(
        strip_comment("make sam-build   # x86_64").trim(),
        "make sam-build"
    );
    assert_eq!(
        strip_comment(r##"curl -d '{"a":"#1"}' # post"##).trim(),
        r##"curl -d '{"a":"#1"}'"##
    );
    assert_eq!(strip_comment("# only a comment"), "");
}

#[test]
fn unknown_commands_are_refused() {
    assert!(parse_step("rm -rf /").is_err());
    assert_eq!(
        parse_step("sam local invoke StkPushFunction --event events/push-valid.json"),
        Ok(Step::Invoke {
            line: "sam local invoke StkPushFunction --event events/push-valid.json".into(),
            function: "StkPushFunction".into(),
            event: "push-valid.json".into(),
        })
    );
}

#[test]
fn env_json_names_the_ports_the_dependencies_use() {
    let root = dynamo::workspace_root().expect("workspace");
    let env = LocalEnv::load(&root).unwrap();
    assert_eq!((env.dynamodb_port, env.daraja_port), (8000, 8001));
}
