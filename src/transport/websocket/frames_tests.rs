use super::*;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame as a browser sends it: masked, shortest length form.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

fn read_all(reader: &mut FrameReader, bytes: &[u8]) -> Result<Vec<ClientFrame>, FrameError> {
    reader.feed(bytes);
    let mut frames = Vec::new();
    while let Some(f) = reader.next_frame()? {
        frames.push(f);
    }
    Ok(frames)
}

fn text(s: &str) -> ClientFrame {
    ClientFrame::Message(s.as_bytes().to_vec())
}

#[test]
fn a_message_fed_one_byte_at_a_time_comes_out_once_and_nothing_is_kept() {
    let mut r = FrameReader::new(1024);
    let bytes = frame(true, TEXT, b"{\"protocol\":\"json\",\"version\":1}\x1e");
    let mut out = Vec::new();
    for b in &bytes {
        out.extend(read_all(&mut r, std::slice::from_ref(b)).unwrap());
    }
    assert_eq!(out, vec![text("{\"protocol\":\"json\",\"version\":1}\x1e")]);
    assert_eq!(r.pending.capacity(), 0, "an idle connection keeps no read buffer");
}

#[test]
fn frames_read_together_come_out_in_order() {
    let mut r = FrameReader::new(1024);
    let mut bytes = frame(true, TEXT, b"one");
    bytes.extend(frame(true, PING, b"hb"));
    bytes.extend(frame(true, BINARY, &[0xff, 0x00]));
    bytes.extend(frame(true, PONG, b""));
    let out = read_all(&mut r, &bytes).unwrap();
    assert_eq!(
        out,
        vec![text("one"), ClientFrame::Ping(b"hb".to_vec()), ClientFrame::Message(vec![0xff, 0]), ClientFrame::Pong]
    );
}

#[test]
fn sixteen_and_sixty_four_bit_lengths() {
    let mut r = FrameReader::new(1 << 20);
    let medium = vec![b'a'; 300];
    let large = vec![b'b'; 70_000];
    let mut bytes = frame(true, TEXT, &medium);
    bytes.extend(frame(true, BINARY, &large));
    let out = read_all(&mut r, &bytes).unwrap();
    assert_eq!(out, vec![ClientFrame::Message(medium), ClientFrame::Message(large)]);
}

#[test]
fn a_fragmented_message_is_joined_with_a_ping_between_its_pieces() {
    let mut r = FrameReader::new(1024);
    let mut bytes = frame(false, TEXT, b"hel");
    bytes.extend(frame(true, PING, b"x"));
    bytes.extend(frame(false, CONTINUATION, b"lo "));
    bytes.extend(frame(true, CONTINUATION, "wörld".as_bytes()));
    let out = read_all(&mut r, &bytes).unwrap();
    assert_eq!(out, vec![ClientFrame::Ping(b"x".to_vec()), text("hello wörld")]);
    assert!(r.fragments.is_none());
}

#[test]
fn text_split_inside_a_character_is_checked_whole() {
    let mut r = FrameReader::new(1024);
    let bytes = "é".as_bytes();
    let mut wire = frame(false, TEXT, &bytes[..1]);
    wire.extend(frame(true, CONTINUATION, &bytes[1..]));
    assert_eq!(read_all(&mut r, &wire).unwrap(), vec![text("é")]);
}

#[test]
fn invalid_utf8_text_is_refused_but_the_same_bytes_as_binary_are_not() {
    let bad = [0xc3, 0x28];
    assert_eq!(read_all(&mut FrameReader::new(64), &frame(true, TEXT, &bad)), Err(FrameError::InvalidUtf8));
    assert_eq!(
        read_all(&mut FrameReader::new(64), &frame(true, BINARY, &bad)).unwrap(),
        vec![ClientFrame::Message(bad.to_vec())]
    );
    assert_eq!(FrameError::InvalidUtf8.close_code(), 1007);
}

#[test]
fn protocol_violations_are_refused_with_1002() {
    let unmasked = {
        let mut f = frame(true, TEXT, b"hi");
        f[1] &= 0x7f;
        f
    };
    let reserved = {
        let mut f = frame(true, TEXT, b"hi");
        f[0] |= 0x40;
        f
    };
    let mut nested = frame(false, TEXT, b"a");
    nested.extend(frame(true, TEXT, b"b"));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unmasked", unmasked),
        ("reserved bits", reserved),
        ("unknown opcode", frame(true, 0x3, b"")),
        ("continuation alone", frame(true, CONTINUATION, b"a")),
        ("message inside a message", nested),
        ("fragmented control", frame(false, PING, b"")),
        ("long control", frame(true, PING, &[0; 126])),
        ("one-byte close", frame(true, CLOSE, &[3])),
        ("reserved close code", frame(true, CLOSE, &1005u16.to_be_bytes())),
    ];
    for (name, bytes) in cases {
        let got = read_all(&mut FrameReader::new(1024), &bytes);
        match got {
            Err(e @ FrameError::Protocol(_)) => assert_eq!(e.close_code(), 1002, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn an_oversized_frame_is_refused_from_its_header_alone() {
    let mut r = FrameReader::new(100);
    let whole = frame(true, TEXT, &[b'a'; 101]);
    // Only the header has arrived: no need to wait for (or buffer) the rest.
    assert_eq!(read_all(&mut r, &whole[..8]), Err(FrameError::TooLong { size: 101, limit: 100 }));
}

#[test]
fn an_oversized_message_in_pieces_is_refused() {
    let mut r = FrameReader::new(100);
    let mut bytes = frame(false, BINARY, &[1; 60]);
    bytes.extend(frame(true, CONTINUATION, &[2; 60]));
    assert_eq!(read_all(&mut r, &bytes), Err(FrameError::TooLong { size: 120, limit: 100 }));
}

#[test]
fn close_frames_with_and_without_a_code() {
    assert_eq!(read_all(&mut FrameReader::new(64), &frame(true, CLOSE, b"")).unwrap(), vec![ClientFrame::Close(None)]);
    let mut body = 1000u16.to_be_bytes().to_vec();
    body.extend_from_slice(b"bye");
    assert_eq!(
        read_all(&mut FrameReader::new(64), &frame(true, CLOSE, &body)).unwrap(),
        vec![ClientFrame::Close(Some(1000))]
    );
    let mut bad_reason = 4000u16.to_be_bytes().to_vec();
    bad_reason.push(0xff);
    assert_eq!(read_all(&mut FrameReader::new(64), &frame(true, CLOSE, &bad_reason)), Err(FrameError::InvalidUtf8));
}

#[test]
fn a_read_goes_into_room_made_for_it_and_is_released_once_parsed() {
    let mut r = FrameReader::new(1024);
    let bytes = frame(true, TEXT, b"ping");
    let buf = r.buffer(512);
    assert!(buf.capacity() >= 512);
    buf.extend_from_slice(&bytes[..3]);
    assert_eq!(r.next_frame(), Ok(None));
    assert!(r.pending.capacity() > 0, "an incomplete frame is kept");
    r.buffer(512).extend_from_slice(&bytes[3..]);
    assert_eq!(r.next_frame(), Ok(Some(text("ping"))));
    assert_eq!(r.pending.capacity(), 0);
}
