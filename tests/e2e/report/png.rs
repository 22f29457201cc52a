//! Just enough of PNG to tell a drawn page from a blank one: the size and
//! how many distinct colours its pixels have (8-bit RGB or RGBA, what
//! Chromium writes).

use std::collections::HashSet;
use std::io::Read;

/// A decoded image: width, height and the distinct colours seen.
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub colours: usize,
}

/// Decodes `bytes`, or says why it cannot.
pub fn decode(bytes: &[u8]) -> Result<Image, String> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !bytes.starts_with(SIGNATURE) {
        return Err("not a PNG: no signature".into());
    }
    let (mut at, mut header, mut idat) = (SIGNATURE.len(), None, Vec::new());
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind = &bytes[at + 4..at + 8];
        let data = bytes
            .get(at + 8..at + 8 + len)
            .ok_or("a chunk runs past the end")?;
        match kind {
            b"IHDR" => header = Some(data.to_vec()),
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        at += 12 + len;
    }
    let h = header.ok_or("no IHDR chunk")?;
    let width = u32::from_be_bytes(h[0..4].try_into().unwrap());
    let height = u32::from_be_bytes(h[4..8].try_into().unwrap());
    let (depth, colour_type, interlace) = (h[8], h[9], h[12]);
    let channels = match colour_type {
        2 => 3,
        6 => 4,
        t => return Err(format!("colour type {t} is not RGB or RGBA")),
    };
    if depth != 8 || interlace != 0 {
        return Err(format!(
            "bit depth {depth}, interlace {interlace}: only 8-bit, not interlaced"
        ));
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .map_err(|e| format!("image data does not inflate: {e}"))?;
    let stride = width as usize * channels;
    if raw.len() != (stride + 1) * height as usize {
        return Err(format!(
            "{} bytes of pixels for {width}x{height}",
            raw.len()
        ));
    }
    let mut prev = vec![0u8; stride];
    let mut colours = HashSet::new();
    for row in raw.chunks(stride + 1) {
        let (filter, line) = (row[0], &row[1..]);
        let mut cur = vec![0u8; stride];
        for i in 0..stride {
            let a = if i >= channels { cur[i - channels] } else { 0 };
            let b = prev[i];
            let c = if i >= channels { prev[i - channels] } else { 0 };
            let predicted = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((a as u16 + b as u16) / 2) as u8,
                4 => paeth(a, b, c),
                f => return Err(format!("unknown row filter {f}")),
            };
            cur[i] = line[i].wrapping_add(predicted);
        }
        for px in cur.chunks(channels) {
            colours.insert(px[..3].to_vec());
        }
        prev = cur;
    }
    Ok(Image {
        width,
        height,
        colours: colours.len(),
    })
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = a as i16 + b as i16 - c as i16;
    let (pa, pb, pc) = (
        (p - a as i16).abs(),
        (p - b as i16).abs(),
        (p - c as i16).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}
