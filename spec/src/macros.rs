//! The one macro that declares a stable ABI enumeration.

/// Declares a `#[repr($repr)]` enum whose every variant has a fixed value and
/// the name the specification text uses for it, with `ALL`, `name`, `raw`,
/// `from_raw` and a checked `TryFrom<$repr>`.
///
/// Values that arrive from the other side of the trust boundary are parsed
/// with `from_raw`/`TryFrom`, never transmuted.
macro_rules! abi_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $repr:ty {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $value:literal => $text:literal,
            )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr($repr)]
        $vis enum $name {
            $(
                $(#[$vmeta])*
                $variant = $value,
            )+
        }

        impl $name {
            /// Every value this version of the ABI defines, in ascending order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The name the specification text gives this value.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            /// The value as it travels on the wire or in a register.
            pub const fn raw(self) -> $repr {
                self as $repr
            }

            /// Parses a raw value; `None` when this ABI version defines no such value.
            pub const fn from_raw(raw: $repr) -> Option<Self> {
                match raw {
                    $($value => Some(Self::$variant),)+
                    _ => None,
                }
            }

            /// Looks a value up by the name the specification text gives it.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.name() == name)
            }
        }

        impl TryFrom<$repr> for $name {
            type Error = $crate::status::UnknownValue;

            fn try_from(raw: $repr) -> Result<Self, Self::Error> {
                Self::from_raw(raw).ok_or($crate::status::UnknownValue {
                    kind: stringify!($name),
                    raw: raw as u64,
                })
            }
        }

        impl From<$name> for $repr {
            fn from(value: $name) -> $repr {
                value.raw()
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

/// Asserts at compile time a struct's size and the offset of each named field.
macro_rules! assert_layout {
    ($ty:ty, size = $size:expr, { $($field:ident = $offset:expr),* $(,)? }) => {
        static_assertions::const_assert_eq!(core::mem::size_of::<$ty>(), $size);
        $(static_assertions::const_assert_eq!(core::mem::offset_of!($ty, $field), $offset);)*
    };
}
