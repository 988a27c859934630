//! The design documents stay readable as they evolve: RFD 0001 at most 1,500 words of
//! prose, and the threat model in its five sections of 100 to 300 words each. Prose is
//! everything but the front matter and code blocks. The RFD's limit leaves out table
//! rows too; the threat model's tables are prose (its risks are ranked and argued in
//! one), so the words in their cells count, not the pipes between the cells or the row
//! that marks the header.

const RFD: &str = include_str!("../../../docs/rfd/0001-setpoint.md");
const THREAT_MODEL: &str = include_str!("../../../docs/threat-model.md");

/// Whether table rows are prose.
#[derive(Clone, Copy, PartialEq)]
enum Tables {
    Skip,
    Count,
}

fn is_table_row(line: &str) -> bool {
    line.trim_start().starts_with('|')
}

/// The prose lines of a Markdown document.
fn prose(markdown: &str, tables: Tables) -> Vec<&str> {
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
            !in_code && (tables == Tables::Count || !is_table_row(line))
        })
        .collect()
}

/// Words of the lines; in a table row, the words of its cells.
fn words(lines: &[&str]) -> usize {
    lines
        .iter()
        .map(|line| {
            if is_table_row(line) {
                // The pipes and the delimiter row (`|---|:--:|`) are layout, not words.
                line.split('|')
                    .filter(|cell| !cell.trim().chars().all(|c| matches!(c, '-' | ':')))
                    .map(|cell| cell.split_whitespace().count())
                    .sum()
            } else {
                line.split_whitespace().count()
            }
        })
        .sum()
}

/// `(heading, prose words)` of each `## ` section, in order.
fn sections(markdown: &str, tables: Tables) -> Vec<(String, usize)> {
    let mut sections: Vec<(String, usize)> = Vec::new();
    for line in prose(markdown, tables) {
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
    let count = words(&prose(RFD, Tables::Skip));
    assert!(
        count <= 1500,
        "docs/rfd/0001-setpoint.md has {count} words of prose; move details to docs/ pages"
    );
}

#[test]
fn the_threat_model_has_its_five_sections_of_100_to_300_words() {
    let sections = sections(THREAT_MODEL, Tables::Count);
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
            "threat model section {name:?} has {count} words of prose, tables included, \
             not 100 to 300"
        );
    }
}

#[test]
fn prose_leaves_out_front_matter_code_and_tables() {
    let document = "---\nauthors: a b c\n---\n# Title here\n\n| a | b |\n```\ncode code\n```\nfour words of prose\n";
    assert_eq!(
        words(&prose(document, Tables::Skip)),
        7,
        "the heading and the last line"
    );
}

#[test]
fn table_cells_are_prose_when_tables_count() {
    let document =
        "| vector | risk |\n|---|:--:|\n| token theft | 3 × 3 |\n```\n| not | a table |\n```\n";
    assert_eq!(
        words(&prose(document, Tables::Count)),
        7,
        "two header cells, two words and three words in the row; no pipes, no delimiter row"
    );
}
