//! Geofence geometry, pure: a rule's [`Shape`] compiled once into a [`Region`] that answers
//! "is this position inside?". Built on the `geo` crate.
//!
//! Conventions (they are part of the rule language, and tested below):
//! - The boundary is inside: a point on a polygon edge, on a hole's edge, or exactly
//!   `radius_m` from a circle's centre is inside. A point strictly inside a hole is outside.
//! - Circles use the haversine great-circle distance on a sphere of the Earth's mean radius,
//!   which has no trouble at the antimeridian or the poles.
//! - Polygon edges are straight lines in (lon, lat), not great circles: fine for geofences up
//!   to a few hundred kilometres, which is what devices use.
//! - The antimeridian: `geo` is planar, so a ring from lon 179 to lon -179 would be read as
//!   spanning the whole globe the long way round. Every edge is taken the *short* way in
//!   longitude instead: compiling "unwraps" each ring (adds or subtracts 360° to each vertex
//!   so that consecutive vertices are less than 180° apart; a ring may then reach past ±180),
//!   and a position is tested at `lon`, `lon - 360` and `lon + 360`. A ring whose edge spans
//!   exactly 180° is ambiguous and refused; a ring that does not close after unwrapping
//!   circles a pole and is refused too (not supported).
//!
//! What this does not do: decide triggers (enter/exit — `leaf.rs`) or name document fields
//! (`validate.rs` prefixes the problems returned here with the field path).

use geo::coordinate_position::{CoordPos, CoordinatePosition};
use geo::{Coord, Distance, Haversine, LineString, Point, Polygon, Validation};

use super::doc::{Circle, PolygonShape, Shape};

/// A compiled geofence area.
#[derive(Clone, Debug, PartialEq)]
pub enum Region {
    Circle {
        center: Point<f64>,
        radius_m: f64,
    },
    /// In unwrapped longitudes (see the module docs): x may lie outside ±180.
    Polygon(Polygon<f64>),
}

/// A problem with a shape: the field below the shape (`exterior`, `holes[1]`, `radius_m`,
/// or empty for the shape as a whole) and what is wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct ShapeProblem {
    pub field: String,
    pub problem: String,
}

fn problem(field: impl Into<String>, problem: impl Into<String>) -> ShapeProblem {
    ShapeProblem {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Largest circle radius: half the Earth's circumference.
pub const MAX_RADIUS_M: f64 = 20_037_508.0;

impl Region {
    /// Checks and compiles a shape. Every problem found is returned, not just the first.
    pub fn compile(shape: &Shape) -> Result<Region, Vec<ShapeProblem>> {
        match shape {
            Shape::Circle(c) => compile_circle(c),
            Shape::Polygon(p) => compile_polygon(p),
        }
    }

    /// Whether the position is inside (boundary included).
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        if !lat.is_finite() || !lon.is_finite() {
            return false;
        }
        match self {
            Region::Circle { center, radius_m } => {
                Haversine.distance(*center, Point::new(lon, lat)) <= *radius_m
            }
            Region::Polygon(poly) => [lon, lon - 360.0, lon + 360.0].into_iter().any(|x| {
                matches!(
                    poly.coordinate_position(&Coord { x, y: lat }),
                    CoordPos::Inside | CoordPos::OnBoundary
                )
            }),
        }
    }
}

fn compile_circle(c: &Circle) -> Result<Region, Vec<ShapeProblem>> {
    let mut problems = Vec::new();
    check_lat("lat", c.lat, &mut problems);
    check_lon("lon", c.lon, &mut problems);
    if !(c.radius_m.is_finite() && c.radius_m > 0.0 && c.radius_m <= MAX_RADIUS_M) {
        problems.push(problem(
            "radius_m",
            format!("must be a number of metres in (0, {MAX_RADIUS_M}]"),
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Region::Circle {
        center: Point::new(c.lon, c.lat),
        radius_m: c.radius_m,
    })
}

fn compile_polygon(p: &PolygonShape) -> Result<Region, Vec<ShapeProblem>> {
    let mut problems = Vec::new();
    let exterior = unwrap_ring("exterior", &p.exterior, None, &mut problems);
    let reference = exterior.as_ref().and_then(|r| r.first()).map(|c| c.x);
    let holes: Vec<Option<Vec<Coord>>> = p
        .holes
        .iter()
        .enumerate()
        .map(|(i, h)| unwrap_ring(&format!("holes[{i}]"), h, reference, &mut problems))
        .collect();
    let (Some(exterior), true) = (exterior, problems.is_empty()) else {
        return Err(problems);
    };
    let holes: Vec<LineString> = holes.into_iter().flatten().map(LineString).collect();
    let poly = Polygon::new(LineString(exterior), holes);
    if let Err(e) = poly.check_validation() {
        return Err(vec![problem("", format!("polygon is invalid: {e}"))]);
    }
    Ok(Region::Polygon(poly))
}

/// Checks one ring and returns it unwrapped (see the module docs). `reference`: a longitude
/// the ring's first vertex is moved next to (the exterior's, for holes).
fn unwrap_ring(
    field: &str,
    ring: &[[f64; 2]],
    reference: Option<f64>,
    problems: &mut Vec<ShapeProblem>,
) -> Option<Vec<Coord>> {
    let before = problems.len();
    if ring.len() < 4 || ring.first() != ring.last() {
        problems.push(problem(
            field,
            "ring must have at least 4 points and be closed (last point = first)",
        ));
    }
    for (i, [lon, lat]) in ring.iter().enumerate() {
        check_lon(&format!("{field}[{i}][0]"), *lon, problems);
        check_lat(&format!("{field}[{i}][1]"), *lat, problems);
    }
    if problems.len() > before {
        return None;
    }
    let mut out: Vec<Coord> = Vec::with_capacity(ring.len());
    for (i, [lon, lat]) in ring.iter().enumerate() {
        let anchor = match out.last() {
            Some(prev) => prev.x,
            None => reference.unwrap_or(*lon),
        };
        let x = lon + 360.0 * ((anchor - lon) / 360.0).round();
        if out.last().is_some() && (x - anchor).abs() >= 180.0 {
            problems.push(problem(
                format!("{field}[{i}]"),
                "edge spans 180° of longitude or more, which is ambiguous; add a vertex between",
            ));
            return None;
        }
        out.push(Coord { x, y: *lat });
    }
    if out.first().map(|c| c.x) != out.last().map(|c| c.x) {
        problems.push(problem(
            field,
            "ring circles a pole (it does not close once edges take the short way across the antimeridian); not supported",
        ));
        return None;
    }
    Some(out)
}

fn check_lat(field: &str, lat: f64, problems: &mut Vec<ShapeProblem>) {
    if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
        problems.push(problem(field, "latitude must be in [-90, 90]"));
    }
}

fn check_lon(field: &str, lon: f64, problems: &mut Vec<ShapeProblem>) {
    if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
        problems.push(problem(field, "longitude must be in [-180, 180]"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poly(exterior: &[[f64; 2]], holes: &[&[[f64; 2]]]) -> Region {
        Region::compile(&Shape::Polygon(PolygonShape {
            exterior: exterior.to_vec(),
            holes: holes.iter().map(|h| h.to_vec()).collect(),
        }))
        .unwrap()
    }

    fn circle(lat: f64, lon: f64, radius_m: f64) -> Region {
        Region::compile(&Shape::Circle(Circle { lat, lon, radius_m })).unwrap()
    }

    /// A 10°×10° square with a 2°×2° hole in the middle.
    const SQUARE: [[f64; 2]; 5] = [[0., 0.], [10., 0.], [10., 10.], [0., 10.], [0., 0.]];
    const HOLE: [[f64; 2]; 5] = [[4., 4.], [6., 4.], [6., 6.], [4., 6.], [4., 4.]];
    /// Fiji-like: from 178°E across the antimeridian to 178°W.
    const FIJI: [[f64; 2]; 5] = [
        [178., -20.],
        [-178., -20.],
        [-178., -15.],
        [178., -15.],
        [178., -20.],
    ];

    #[test]
    fn polygon_table() {
        let holed = poly(&SQUARE, &[&HOLE]);
        let fiji = poly(&FIJI, &[]);
        // Hole straddling the antimeridian inside a ring that does too.
        let fiji_holed = poly(
            &FIJI,
            &[&[
                [179.5, -18.],
                [-179.5, -18.],
                [-179.5, -17.],
                [179.5, -17.],
                [179.5, -18.],
            ]],
        );
        // (name, region, lat, lon, inside)
        let cases: &[(&str, &Region, f64, f64, bool)] = &[
            ("interior", &holed, 2.0, 2.0, true),
            ("outside", &holed, 11.0, 2.0, false),
            ("on an edge", &holed, 0.0, 5.0, true),
            ("on a vertex", &holed, 10.0, 10.0, true),
            ("just outside an edge", &holed, -1e-9, 5.0, false),
            ("inside the hole", &holed, 5.0, 5.0, false),
            ("on the hole's edge", &holed, 4.0, 5.0, true),
            ("between hole and exterior", &holed, 3.9, 5.0, true),
            ("antimeridian east side", &fiji, -17.0, 179.0, true),
            ("antimeridian west side", &fiji, -17.0, -179.0, true),
            ("antimeridian at +180", &fiji, -17.0, 180.0, true),
            ("antimeridian at -180", &fiji, -17.0, -180.0, true),
            (
                "antimeridian: not the long way round",
                &fiji,
                -17.0,
                0.0,
                false,
            ),
            (
                "antimeridian: just east of the ring",
                &fiji,
                -17.0,
                -177.9,
                false,
            ),
            ("antimeridian on the west edge", &fiji, -17.0, -178.0, true),
            ("antimeridian hole", &fiji_holed, -17.5, 180.0, false),
            (
                "antimeridian hole, other side",
                &fiji_holed,
                -17.5,
                -179.9,
                false,
            ),
            (
                "antimeridian beside the hole",
                &fiji_holed,
                -19.0,
                179.9,
                true,
            ),
        ];
        for (name, region, lat, lon, want) in cases {
            assert_eq!(region.contains(*lat, *lon), *want, "{name}");
        }
    }

    #[test]
    fn circle_table() {
        let berlin = circle(52.52, 13.405, 1000.0);
        let dateline = circle(0.0, 179.999, 1000.0);
        // ~111 m per 0.001° of latitude.
        let edge = Haversine.distance(Point::new(13.405, 52.52), Point::new(13.405, 52.529));
        let exact = circle(52.52, 13.405, edge);
        let cases: &[(&str, &Region, f64, f64, bool)] = &[
            ("centre", &berlin, 52.52, 13.405, true),
            ("~890 m north", &berlin, 52.528, 13.405, true),
            ("~1.1 km north", &berlin, 52.53, 13.405, false),
            ("exactly on the radius", &exact, 52.529, 13.405, true),
            (
                "across the antimeridian (~220 m)",
                &dateline,
                0.0,
                -179.999,
                true,
            ),
            ("far across the antimeridian", &dateline, 0.0, -179.9, false),
            ("non-finite position", &berlin, f64::NAN, 13.405, false),
        ];
        for (name, region, lat, lon, want) in cases {
            assert_eq!(region.contains(*lat, *lon), *want, "{name}");
        }
    }

    #[test]
    fn bad_shapes_name_the_field() {
        let compile = |exterior: &[[f64; 2]], holes: &[&[[f64; 2]]]| {
            Region::compile(&Shape::Polygon(PolygonShape {
                exterior: exterior.to_vec(),
                holes: holes.iter().map(|h| h.to_vec()).collect(),
            }))
            .unwrap_err()
        };
        let open = compile(&[[0., 0.], [1., 0.], [1., 1.], [0., 1.]], &[]);
        assert_eq!(open[0].field, "exterior");
        assert!(open[0].problem.contains("at least 4 points"), "{open:?}");
        let bad_lat = compile(&[[0., 0.], [1., 0.], [1., 91.], [0., 0.]], &[]);
        assert_eq!(bad_lat[0].field, "exterior[2][1]");
        let bad_hole = compile(&SQUARE, &[&[[1., 1.], [2., 1.], [1., 1.]]]);
        assert_eq!(bad_hole[0].field, "holes[0]");
        let bowtie = compile(&[[0., 0.], [1., 1.], [1., 0.], [0., 1.], [0., 0.]], &[]);
        assert!(
            bowtie[0].problem.contains("self-intersection"),
            "{bowtie:?}"
        );
        let hole_outside = compile(
            &SQUARE,
            &[&[[20., 20.], [21., 20.], [21., 21.], [20., 20.]]],
        );
        assert!(
            hole_outside[0].problem.contains("invalid"),
            "{hole_outside:?}"
        );
        let half_globe = compile(&[[-90., 0.], [90., 0.], [90., 10.], [-90., 0.]], &[]);
        assert!(half_globe[0].problem.contains("180°"), "{half_globe:?}");
        let pole = compile(&[[0., 80.], [120., 80.], [-120., 80.], [0., 80.]], &[]);
        assert!(pole[0].problem.contains("pole"), "{pole:?}");
        let circle = Region::compile(&Shape::Circle(Circle {
            lat: 0.0,
            lon: 200.0,
            radius_m: -1.0,
        }))
        .unwrap_err();
        let fields: Vec<_> = circle.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["lon", "radius_m"]);
    }
}
