//! The minimal sp2a service: one exported function.

sp2a_guest::service!({
    path: ["../../wit", "wit"],
    world: "sp2a:hello/hello",
});

struct Hello;

impl exports::sp2a::hello::greet::Guest for Hello {
    fn greet(name: String) -> String {
        sp2a_guest::info!("greeting {name}");
        format!("Hello, {name}!")
    }
}

export!(Hello);
