//! The design documents stay readable as they evolve: RFD 0001 at most 1,500 words of
//! prose, and the threat model in its five sections of 100 to 300 words each. Prose is
//! everything but the front matter, code blocks and table rows.

const RFD: &str = include_str!("../../../docs/rfd/0001-setpoint.md");
const THREAT_MODEL: &str = include_str!("../../../docs/threat-model.md");

/// The prose lines of a Markdown document.
fn prose(markdown: &str) -> Vec<&str> {
    let mut lines = markdown.lines().peekable();
    if lines.peek() == Some(&"---") {
        lines.next();
        for line in lines.by_ref() {
            if line == "---" {
                break;
            }
        }
    }
    let mut in_code = false;
    lines
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                return false;
            }
            !in_code && !line.trim_start().starts_with('|')
        })
        .collect()
}

fn words(lines: &[&str]) -> usize {
    lines
        .iter()
        .map(|line| line.split_whitespace().count())
        .sum()
}

/// `(heading, prose words)` of each `## ` section, in order.
fn sections(markdown: &str) -> Vec<(String, usize)> {
    let mut sections: Vec<(String, usize)> = Vec::new();
    for line in prose(markdown) {
        if let Some(heading) = line.strip_prefix("## ") {
            sections.push((heading.to_owned(), 0));
        } else if let Some((_, count)) = sections.last_mut() {
            *count += words(&[line]);
        }
    }
    sections
}

#[test]
fn the_rfd_has_at_most_1500_words_of_prose() {
    let count = words(&prose(RFD));
    assert!(
        count <= 1500,
        "docs/rfd/0001-setpoint.md has {count} words of prose; move details to docs/ pages"
    );
}

#[test]
fn the_threat_model_has_its_five_sections_of_100_to_300_words() {
    let sections = sections(THREAT_MODEL);
    let names: Vec<&str> = sections.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Assumptions",
            "Attack vectors",
            "Risk",
            "Countermeasures",
            "Trade-offs"
        ]
    );
    for (name, count) in &sections {
        assert!(
            (100..=300).contains(count),
            "threat model section {name:?} has {count} words of prose, not 100 to 300"
        );
    }
}

#[test]
fn prose_leaves_out_front_matter_code_and_tables() {
    let document = "---\nauthors: a b c\n---\n# Title here\n\n| a | b |\n```\ncode code\n```\nfour words of prose\n";
    assert_eq!(words(&prose(document)), 7, "the heading and the last line");
}
