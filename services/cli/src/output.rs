//! What the commands print: Deployments as a table or as JSON, and watch events as one
//! line each.

use clap::ValueEnum;
use setpoint_proto::v1::{
    DeploymentReplicas, ReconcileState, WatchDeploymentsResponse, WatchEventType,
};

#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// The Deployments a command answered with, in `output`'s format.
pub fn print_rows(output: Output, rows: &[DeploymentReplicas]) -> anyhow::Result<()> {
    match output {
        Output::Table => print_table(rows),
        Output::Json => println!("{}", serde_json::to_string_pretty(&to_json(rows))?),
    }
    Ok(())
}

pub fn print_event(output: Output, message: &WatchDeploymentsResponse) {
    let kind = match message.r#type() {
        WatchEventType::Initial => "INITIAL",
        WatchEventType::Synced => "SYNCED",
        WatchEventType::Changed => "CHANGED",
        WatchEventType::Deleted => "DELETED",
        WatchEventType::Unspecified => "UNKNOWN",
    };
    let Some(row) = &message.replicas else {
        // SYNCED: the current state is complete.
        eprintln!("-- {kind}: changes follow --");
        return;
    };
    match output {
        Output::Json => {
            let mut json = to_json(std::slice::from_ref(row));
            json[0]["type"] = kind.into();
            println!("{}", json[0]);
        }
        Output::Table => {
            let deployment = row.deployment.clone().unwrap_or_default();
            println!(
                "{kind:<8} {}/{} replicas={} ready={} desired={} {}",
                deployment.namespace,
                deployment.name,
                row.spec_replicas,
                row.ready_replicas,
                row.desired_replicas
                    .map_or("-".into(), |desired| desired.to_string()),
                state_name(row)
            );
        }
    }
}

pub fn state_name(row: &DeploymentReplicas) -> &'static str {
    match ReconcileState::try_from(row.reconcile_state) {
        Ok(ReconcileState::Unmanaged) => "Unmanaged",
        Ok(ReconcileState::Pending) => "Pending",
        Ok(ReconcileState::Reconciled) => "Reconciled",
        Ok(ReconcileState::ManagedByHpa) => "ManagedByHPA",
        Ok(ReconcileState::TargetReplaced) => "TargetReplaced",
        Ok(ReconcileState::Failed) => "Failed",
        Ok(ReconcileState::Unspecified) | Err(_) => "Unknown",
    }
}

fn print_table(rows: &[DeploymentReplicas]) {
    let mut lines = vec![
        [
            "NAMESPACE",
            "NAME",
            "REPLICAS",
            "READY",
            "AVAILABLE",
            "DESIRED",
            "STATE",
            "VERSION",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for row in rows {
        let deployment = row.deployment.clone().unwrap_or_default();
        lines.push(vec![
            deployment.namespace,
            deployment.name,
            row.spec_replicas.to_string(),
            row.ready_replicas.to_string(),
            row.available_replicas.to_string(),
            row.desired_replicas
                .map_or("-".to_owned(), |replicas| replicas.to_string()),
            state_name(row).to_owned(),
            if row.version.is_empty() {
                "-".to_owned()
            } else {
                row.version.clone()
            },
        ]);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|column| {
            lines
                .iter()
                .map(|line| line[column].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

fn to_json(rows: &[DeploymentReplicas]) -> serde_json::Value {
    rows.iter()
        .map(|row| {
            let deployment = row.deployment.clone().unwrap_or_default();
            serde_json::json!({
                "namespace": deployment.namespace,
                "name": deployment.name,
                "uid": row.uid,
                "specReplicas": row.spec_replicas,
                "readyReplicas": row.ready_replicas,
                "availableReplicas": row.available_replicas,
                "updatedReplicas": row.updated_replicas,
                "desiredReplicas": row.desired_replicas,
                "reconcileState": state_name(row),
                "reconcileMessage": row.reconcile_message,
                "version": row.version,
            })
        })
        .collect()
}
