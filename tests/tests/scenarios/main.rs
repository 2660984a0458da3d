mod bad_input;
mod chaos;
mod conformance;
mod languages;
mod lifecycle;
mod publish;
mod sandbox;
