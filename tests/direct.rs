//! Sending to one connection anywhere in the server: an `Address` taken
//! on one worker reaches its connection from any other worker, and from
//! outside through a `Broadcaster`, and says when the connection is gone.

mod util;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use util::{start, wait_for, Client};
use wsloop::{Address, Conn, DirectStatus, Handler, Message};

type Directory = Arc<Mutex<HashMap<String, Address>>>;

/// Each connection is named by its path (`/alice`) and listed in the
/// directory; `to NAME TEXT` sends TEXT to NAME alone.
struct Mail {
    directory: Directory,
}

impl Handler for Mail {
    type Data = String;

    fn on_upgrade(
        &mut self,
        req: &wsloop::Request<'_>,
        _: std::net::SocketAddr,
    ) -> wsloop::Upgrade<String> {
        wsloop::Upgrade::accept(req.path.trim_start_matches('/').to_owned())
    }

    fn on_open(&mut self, conn: &mut Conn<'_, String>) {
        let address = conn.address();
        assert_eq!(conn.address(), address, "the same address every time");
        self.directory
            .lock()
            .unwrap()
            .insert(conn.data().clone(), address);
        let _ = conn.send_text(&format!("on worker {}", address.worker()));
    }

    fn on_message(&mut self, conn: &mut Conn<'_, String>, msg: Message<'_>) {
        let Message::Text(text) = msg else { return };
        let mut words = text.splitn(3, ' ');
        let (Some("to"), Some(name), Some(line)) = (words.next(), words.next(), words.next())
        else {
            return;
        };
        let to = self.directory.lock().unwrap().get(name).copied();
        let status = match to {
            Some(to) => conn.send_to(&to, Message::Text(&format!("from {}: {line}", conn.data()))),
            None => DirectStatus::Gone,
        };
        if status != DirectStatus::Queued {
            let _ = conn.send_text(&format!("{name} is {status:?}"));
        }
    }
}

fn text(client: &mut Client) -> String {
    String::from_utf8(client.expect_frame().payload).unwrap()
}

#[test]
fn an_address_reaches_its_connection_from_any_worker_and_from_outside() {
    let directory = Directory::default();
    let server = {
        let directory = directory.clone();
        start(util::config(4), move || Mail {
            directory: directory.clone(),
        })
    };
    let addr = server.local_addr();
    let names: Vec<String> = (0..12).map(|i| format!("user{i}")).collect();
    let mut clients: Vec<Client> = names
        .iter()
        .map(|n| Client::open(addr, &format!("/{n}")))
        .collect();
    let workers: Vec<String> = clients.iter_mut().map(text).collect();
    let mut distinct = workers.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() > 1,
        "12 connections all on one of 4 workers: {workers:?}"
    );
    // user0 writes to everyone else, whatever worker each is on.
    for name in &names[1..] {
        clients[0].send_text(&format!("to {name} hello {name}"));
    }
    for (client, name) in clients.iter_mut().zip(&names).skip(1) {
        assert_eq!(text(client), format!("from user0: hello {name}"));
    }
    // From outside the workers.
    let user5 = directory.lock().unwrap()["user5"];
    let outside = server.broadcaster();
    assert_eq!(
        outside.send_to(&user5, Message::Text("from outside")),
        DirectStatus::Queued
    );
    assert_eq!(text(&mut clients[5]), "from outside");
    // Gone once closed, and a new connection with the same id is not it.
    let gone = clients.remove(7);
    drop(gone);
    let user7 = directory.lock().unwrap()["user7"];
    wait_for("user7 to be gone", || {
        outside.send_to(&user7, Message::Text("late")) == DirectStatus::Gone
    });
    let mut newcomer = Client::open(addr, "/newcomer");
    let _ = text(&mut newcomer);
    assert_eq!(
        outside.send_to(&user7, Message::Text("late")),
        DirectStatus::Gone
    );
    clients[0].send_text("to user7 anyone there?");
    assert_eq!(text(&mut clients[0]), "user7 is Gone");
    newcomer.send_text("to user1 still here");
    assert_eq!(text(&mut clients[1]), "from newcomer: still here");
}
