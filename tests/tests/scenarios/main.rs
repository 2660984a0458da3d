mod bad_input;
mod chaos;
mod conformance;
mod lifecycle;
mod publish;
mod sandbox;
