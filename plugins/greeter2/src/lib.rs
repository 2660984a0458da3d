include!("../../greeter/src/lib.rs");
