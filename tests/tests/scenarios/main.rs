mod bad_input;
mod chaos;
mod cluster;
mod conformance;
mod languages;
mod lifecycle;
mod publish;
mod sandbox;
