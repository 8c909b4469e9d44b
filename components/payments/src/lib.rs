//! The Payments component: a user's component whose action has a side
//! effect that must happen once per request, the example of
//! `docs/chaos.md`, which `zmanager chaos` checks under worker kills.
//!
//! The side effect is a line in a ledger file, `charge <seq> <service>
//! <message id> <amount>`: the file chaos reads with `--record-file`.
//!
//! - `charge`: `{"ledger", "seq", "amount", "sleep_ms"}` charges once per
//!   request. Before it writes, it looks for the request's line in the
//!   ledger — the effect itself is the record that it happened, kept where
//!   a worker started after a crash finds it — and, found, answers as the
//!   first time without charging again.
//! - `charge_unchecked`: the same without the look: each delivery charges.
//!   A worker killed after the charge and before its result reached the
//!   node has its request delivered again, and charged again.
//!
//! `sleep_ms` after the charge widens the window a kill lands in, so that
//! a short run shows what a long one would.
//!
//! One worker runs a request at a time: the look and the write are not
//! atomic against another process charging the same request at the same
//! moment, which the node does not do (it delivers again only once the
//! worker that had the request is gone).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zmanager_sdk::{ActionError, Context};

#[derive(Debug, Default)]
pub struct Payments;

/// A charge to make.
#[derive(Debug, Deserialize, Serialize)]
pub struct Charge {
    /// The ledger file (appended to).
    pub ledger: String,
    /// The request's number (chaos's `{seq}`).
    pub seq: u64,
    pub amount: u64,
    /// How long to wait after charging, in ms (at most 5 s).
    #[serde(default)]
    pub sleep_ms: u64,
}

/// What a charge answers: the charge, and whether this delivery made it.
#[derive(Debug, Serialize)]
pub struct Receipt {
    pub seq: u64,
    pub amount: u64,
    /// False when the request was charged by an earlier delivery.
    pub charged_now: bool,
}

/// The ledger line of `charge` for the request `context` is about.
fn line(charge: &Charge, context: &Context<'_>) -> String {
    format!(
        "charge {} {} {} {}\n",
        charge.seq, context.service, context.message_id, charge.amount
    )
}

/// True when the ledger has a line for this request (its service and id).
fn charged_before(charge: &Charge, context: &Context<'_>) -> Result<bool, ActionError> {
    let text = match std::fs::read_to_string(&charge.ledger) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(ActionError::failed(format!("{}: {e}", charge.ledger))),
    };
    Ok(text.lines().any(|l| {
        let mut fields = l.split_whitespace().skip(2);
        fields.next() == Some(context.service) && fields.next() == Some(context.message_id)
    }))
}

/// Appends the charge's line, in one write.
fn write_charge(charge: &Charge, context: &Context<'_>) -> Result<(), ActionError> {
    let mut ledger = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&charge.ledger)
        .map_err(|e| ActionError::failed(format!("{}: {e}", charge.ledger)))?;
    ledger
        .write_all(line(charge, context).as_bytes())
        .map_err(|e| ActionError::failed(format!("{}: {e}", charge.ledger)))
}

fn pause(charge: &Charge) {
    std::thread::sleep(Duration::from_millis(charge.sleep_ms.min(5000)));
}

fn charge(charge: Charge, context: &Context<'_>) -> Result<Receipt, ActionError> {
    let charged_now = !charged_before(&charge, context)?;
    if charged_now {
        write_charge(&charge, context)?;
        pause(&charge);
    }
    Ok(Receipt {
        seq: charge.seq,
        amount: charge.amount,
        charged_now,
    })
}

fn charge_unchecked(charge: Charge, context: &Context<'_>) -> Result<Receipt, ActionError> {
    write_charge(&charge, context)?;
    pause(&charge);
    Ok(Receipt {
        seq: charge.seq,
        amount: charge.amount,
        charged_now: true,
    })
}

zmanager_sdk::component! {
    Payments as "Payments" {
        "charge" => charge,
        "charge_unchecked" => charge_unchecked,
    }
}

zmanager_sdk::export_component!(Payments);

#[cfg(test)]
mod tests {
    use zmanager_sdk::{Component, Request, respond};

    use super::*;

    #[test]
    fn a_request_delivered_again_is_charged_once_unless_unchecked() {
        let ledger = std::env::temp_dir().join(format!("payments-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&ledger);
        let payload = respond(&Charge {
            ledger: ledger.display().to_string(),
            seq: 7,
            amount: 5,
            sleep_ms: 0,
        })
        .unwrap();
        let deliver = |action: &str, id: &str, attempt: u32| {
            let mut request = Request::new(&payload);
            request.context = Context {
                message_id: id,
                service: "shop",
                attempt,
                ..Context::default()
            };
            Payments.call(action, &request).unwrap()
        };
        deliver("charge", "a", 1);
        deliver("charge", "a", 2);
        deliver("charge", "b", 1);
        let lines = |ledger: &std::path::Path| std::fs::read_to_string(ledger).unwrap();
        assert_eq!(lines(&ledger), "charge 7 shop a 5\ncharge 7 shop b 5\n");
        deliver("charge_unchecked", "c", 1);
        deliver("charge_unchecked", "c", 2);
        assert_eq!(lines(&ledger).matches(" c 5").count(), 2);
        std::fs::remove_file(&ledger).unwrap();
    }
}
