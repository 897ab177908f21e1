//! One client event body, as `POST /v1/events` takes it: the gateway's fast parser
//! (`ClientEvent::parse`) must agree with the value parser, and an accepted event's wire form
//! must be what every stage reads back as the same event (see `check_client_event`).
#![no_main]

use domain::ClientEvent;
use libfuzzer_sys::fuzz_target;
use metastream_fuzz::check_client_event;

fuzz_target!(|body: &[u8]| {
    check_client_event(body, ClientEvent::parse(body));
});
