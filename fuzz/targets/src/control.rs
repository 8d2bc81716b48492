//! Control-socket requests (one JSON line), decoded as the node decodes them.

use sp2a::node::control::ControlRequest;

pub fn seeds() -> Vec<Vec<u8>> {
    [
        ControlRequest::Find {
            name: "hello".into(),
        },
        ControlRequest::Pull {
            target: "bafkr4i".into(),
        },
        ControlRequest::Call {
            service: "hello".into(),
            call: "greet(\"x\")".into(),
            remote: true,
        },
        ControlRequest::Share {
            path: "hello.rps".into(),
        },
        ControlRequest::Status,
    ]
    .iter()
    .map(|r| serde_json::to_vec(r).expect("a request encodes"))
    .collect()
}

pub fn run(bytes: &[u8]) -> String {
    let Ok(line) = std::str::from_utf8(bytes) else {
        return "not utf-8".into();
    };
    match serde_json::from_str::<ControlRequest>(line) {
        Ok(ControlRequest::Find { name }) => {
            format!("find {}", sp2a::package::is_service_name(&name))
        }
        Ok(other) => format!("{other:?}")
            .chars()
            .take_while(|c| c.is_alphabetic())
            .collect(),
        Err(e) => format!("err {:?}", e.classify()),
    }
}
