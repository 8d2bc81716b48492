//! The one "lowest score, random among ties" choice, used by the downloader
//! (rarest chunk) and by the uploader (least-uploaded chunk).

use rand::Rng;

/// The candidate with the lowest score, chosen uniformly at random among
/// those with that score (reservoir sampling: one pass, no allocation).
pub fn lowest<T>(candidates: impl IntoIterator<Item = (T, u64)>, rng: &mut impl Rng) -> Option<T> {
    let mut best: Option<(T, u64)> = None;
    let mut ties = 0u32;
    for (candidate, score) in candidates {
        match &best {
            Some((_, best_score)) if score > *best_score => {}
            Some((_, best_score)) if score == *best_score => {
                ties += 1;
                if rng.gen_range(0..ties) == 0 {
                    best = Some((candidate, score));
                }
            }
            _ => {
                best = Some((candidate, score));
                ties = 1;
            }
        }
    }
    best.map(|(candidate, _)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn lowest_score_wins_and_ties_are_spread_evenly() {
        let mut rng = StdRng::seed_from_u64(7);
        assert_eq!(lowest([(1, 5), (2, 3), (3, 9)], &mut rng), Some(2));
        assert_eq!(lowest(std::iter::empty::<(u8, u64)>(), &mut rng), None);
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            let pick = lowest([(0, 1), (1, 1), (2, 1), (3, 2)], &mut rng).unwrap();
            counts[pick] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }
}
