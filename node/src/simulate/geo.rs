//! Small spherical geometry for simulated routes: move a point along a bearing, measure
//! great-circle distances and bearings, and express a point as metres north/east of another.
//!
//! The Earth is a sphere of [`EARTH_RADIUS_M`]; that is within 0.5 % of the ellipsoid, plenty
//! for a simulator. Pure: no I/O, no clock. What it does not do: projections, polygons,
//! anything near the poles beyond staying numerically valid (latitudes are clamped to ±90 and
//! longitudes wrapped into [-180, 180]).

/// Mean Earth radius (IUGG), metres.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A position in degrees, as in telemetry payloads (`{"lat": …, "lon": …}`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatLon {
    /// Degrees north, in [-90, 90].
    pub lat: f64,
    /// Degrees east, in [-180, 180].
    pub lon: f64,
}

impl LatLon {
    /// Whether both coordinates are finite and in range.
    pub fn is_valid(self) -> bool {
        self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon)
    }
}

/// Wraps a longitude into [-180, 180].
pub fn wrap_lon(lon: f64) -> f64 {
    if (-180.0..=180.0).contains(&lon) {
        return lon;
    }
    let wrapped = (lon + 180.0).rem_euclid(360.0) - 180.0;
    // rem_euclid maps 180 to -180; both are the same meridian.
    if wrapped < -180.0 {
        wrapped + 360.0
    } else {
        wrapped
    }
}

/// The point reached from `from` after `distance_m` along the great circle that starts with
/// `bearing_deg` (clockwise from north).
pub fn destination(from: LatLon, bearing_deg: f64, distance_m: f64) -> LatLon {
    let delta = distance_m / EARTH_RADIUS_M;
    let theta = bearing_deg.to_radians();
    let (phi1, lambda1) = (from.lat.to_radians(), from.lon.to_radians());
    let sin_phi2 = phi1.sin() * delta.cos() + phi1.cos() * delta.sin() * theta.cos();
    let phi2 = sin_phi2.clamp(-1.0, 1.0).asin();
    let lambda2 = lambda1
        + (theta.sin() * delta.sin() * phi1.cos()).atan2(delta.cos() - phi1.sin() * sin_phi2);
    LatLon {
        lat: phi2.to_degrees().clamp(-90.0, 90.0),
        lon: wrap_lon(lambda2.to_degrees()),
    }
}

/// Great-circle distance in metres (haversine formula).
pub fn haversine_m(a: LatLon, b: LatLon) -> f64 {
    let (phi1, phi2) = (a.lat.to_radians(), b.lat.to_radians());
    let d_phi = phi2 - phi1;
    let d_lambda = (b.lon - a.lon).to_radians();
    let h = (d_phi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (d_lambda / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().clamp(0.0, 1.0).asin()
}

/// Initial bearing from `a` towards `b`, degrees clockwise from north in [0, 360).
pub fn bearing_deg(a: LatLon, b: LatLon) -> f64 {
    let (phi1, phi2) = (a.lat.to_radians(), b.lat.to_radians());
    let d_lambda = (b.lon - a.lon).to_radians();
    let y = d_lambda.sin() * phi2.cos();
    let x = phi1.cos() * phi2.sin() - phi1.sin() * phi2.cos() * d_lambda.cos();
    y.atan2(x).to_degrees().rem_euclid(360.0)
}

/// `p` as (metres north, metres east) of `origin`, on the local flat approximation
/// (equirectangular). Good to well under 1 % over tens of kilometres away from the poles.
pub fn offset_m(origin: LatLon, p: LatLon) -> (f64, f64) {
    let north = (p.lat - origin.lat).to_radians() * EARTH_RADIUS_M;
    let mean_lat = ((p.lat + origin.lat) / 2.0).to_radians();
    let east = wrap_lon(p.lon - origin.lon).to_radians() * EARTH_RADIUS_M * mean_lat.cos();
    (north, east)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ll(lat: f64, lon: f64) -> LatLon {
        LatLon { lat, lon }
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// One degree of arc on the sphere.
    const DEG_M: f64 = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;

    #[test]
    fn destination_table() {
        // (from, bearing, distance, expected)
        let cases = [
            (ll(0.0, 0.0), 0.0, DEG_M, ll(1.0, 0.0)),
            (ll(0.0, 0.0), 90.0, DEG_M, ll(0.0, 1.0)),
            (ll(0.0, 0.0), 180.0, DEG_M, ll(-1.0, 0.0)),
            (ll(0.0, 0.0), 270.0, DEG_M, ll(0.0, -1.0)),
            (ll(48.0, 11.0), 0.0, 2.0 * DEG_M, ll(50.0, 11.0)),
            // Across the antimeridian, east and west.
            (ll(0.0, 179.5), 90.0, DEG_M, ll(0.0, -179.5)),
            (ll(0.0, -179.5), 270.0, DEG_M, ll(0.0, 179.5)),
            // Over the north pole: come down the other meridian.
            (ll(89.0, 0.0), 0.0, 2.0 * DEG_M, ll(89.0, 180.0)),
            (ll(10.0, 20.0), 33.0, 0.0, ll(10.0, 20.0)),
        ];
        for (from, bearing, d, want) in cases {
            let got = destination(from, bearing, d);
            assert!(got.is_valid(), "{got:?}");
            let lon_diff = wrap_lon(got.lon - want.lon).abs();
            assert!(
                close(got.lat, want.lat, 1e-9) && lon_diff < 1e-9,
                "{from:?} {bearing}° {d} m: got {got:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn haversine_table() {
        let cases = [
            (ll(0.0, 0.0), ll(0.0, 0.0), 0.0),
            (ll(0.0, 0.0), ll(1.0, 0.0), DEG_M),
            (ll(0.0, 0.0), ll(0.0, 90.0), 90.0 * DEG_M),
            (ll(90.0, 0.0), ll(-90.0, 0.0), 180.0 * DEG_M),
            (ll(0.0, 179.5), ll(0.0, -179.5), DEG_M),
            // Along a parallel at 60°N: shorter than 1° × cos(60°) of the equator's arc.
            (ll(60.0, 0.0), ll(60.0, 1.0), 55_597.0),
        ];
        for (a, b, want) in cases {
            let got = haversine_m(a, b);
            assert!(close(got, want, 1.0), "{a:?} → {b:?}: {got} m, want {want}");
            assert!(close(haversine_m(b, a), got, 1e-6), "symmetric");
        }
    }

    #[test]
    fn destination_then_distance_and_bearing_round_trip() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..1000 {
            let from = ll(rng.f64() * 160.0 - 80.0, rng.f64() * 360.0 - 180.0);
            let bearing = rng.f64() * 360.0;
            let d = rng.f64() * 50_000.0 + 1.0;
            let to = destination(from, bearing, d);
            assert!(to.is_valid());
            assert!(close(haversine_m(from, to), d, d * 1e-9 + 1e-6));
            let back = bearing_deg(from, to);
            let diff = (back - bearing).rem_euclid(360.0);
            assert!(diff.min(360.0 - diff) < 1e-6, "{bearing} vs {back}");
        }
    }

    #[test]
    fn bearing_table() {
        let cases = [
            (ll(0.0, 0.0), ll(1.0, 0.0), 0.0),
            (ll(0.0, 0.0), ll(0.0, 1.0), 90.0),
            (ll(0.0, 0.0), ll(-1.0, 0.0), 180.0),
            (ll(0.0, 0.0), ll(0.0, -1.0), 270.0),
            (ll(0.0, 179.0), ll(0.0, -179.0), 90.0),
        ];
        for (a, b, want) in cases {
            assert!(close(bearing_deg(a, b), want, 1e-9), "{a:?} → {b:?}");
        }
    }

    #[test]
    fn offsets_match_distances_locally() {
        let origin = ll(48.137, 11.575);
        for (bearing, d) in [(0.0, 10_000.0), (90.0, 10_000.0), (225.0, 7_000.0)] {
            let p = destination(origin, bearing, d);
            let (n, e) = offset_m(origin, p);
            assert!(close(n.hypot(e), d, d * 0.01), "{bearing}: {n} {e}");
        }
        let (n, e) = offset_m(ll(0.0, 179.9), ll(0.0, -179.9));
        assert!(close(n, 0.0, 1e-9) && close(e, 0.2 * DEG_M, 1.0), "{n} {e}");
    }

    #[test]
    fn wrap_lon_table() {
        for (lon, want) in [
            (0.0, 0.0),
            (180.0, 180.0),
            (-180.0, -180.0),
            (181.0, -179.0),
            (-181.0, 179.0),
            (540.0, -180.0), // the same meridian as 180
            (359.0, -1.0),
        ] {
            assert!(close(wrap_lon(lon), want, 1e-9), "{lon}: {}", wrap_lon(lon));
        }
    }
}
