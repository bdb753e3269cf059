//! Time the Pillow-exact resize on the inference chain's 672 → 224 and its two passes.
fn time(name: &str, w: u32, h: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 7 + y) as u8, (x ^ y) as u8, (y * 3) as u8])
    });
    let t = std::time::Instant::now();
    for _ in 0..200 {
        std::hint::black_box(birads_data::image_ops::resize_bilinear(&img, 224, 224));
    }
    println!("{name}: {:.0} µs", t.elapsed().as_secs_f64() * 1e6 / 200.0);
}

fn main() {
    time("672x672 -> 224x224", 672, 672);
    time("672x224 -> 224x224 (horizontal pass only)", 672, 224);
    time("224x672 -> 224x224 (vertical pass only)", 224, 672);
}
