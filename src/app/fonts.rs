//! Fonts: egui's default proportional font has no arrows or geometric shapes, so the
//! bundled monospace font (Hack) is added as its fallback for the few symbols the studio
//! draws (▶ ■ ● ↶ ↷ ▲ ▼ ▾ →). Datasets hold any script, so a system CJK font is added
//! as the last fallback when one is installed; other missing characters show as boxes.

use eframe::egui;

/// Installs the fallback on `ctx`.
pub fn install(ctx: &egui::Context) {
    let mut fonts = egui::FontDefinitions::default();
    if fonts.font_data.contains_key("Hack") {
        if let Some(family) = fonts.families.get_mut(&egui::FontFamily::Proportional) {
            if !family.iter().any(|f| f == "Hack") {
                family.push("Hack".to_owned());
            }
        }
    }
    if let Some((name, bytes)) = system_cjk_font() {
        fonts.font_data.insert(
            name.clone(),
            std::sync::Arc::new(egui::FontData::from_owned(bytes)),
        );
        for family in fonts.families.values_mut() {
            family.push(name.clone());
        }
    }
    ctx.set_fonts(fonts);
}

/// Common places of a CJK font on Linux and macOS.
const CJK_FONTS: &[&str] = &[
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/google-droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
];

fn system_cjk_font() -> Option<(String, Vec<u8>)> {
    CJK_FONTS.iter().find_map(|p| {
        let bytes = std::fs::read(p).ok()?;
        Some(("system-cjk".to_owned(), bytes))
    })
}
